"""Continuous batching (``adapters/mlx/refill.py``) against today's compaction, side by side in one run.

Today's way: the windows in batches of ``--rows`` (as the service makes them), each batch's sequences leaving it as
they end, its last steps running few rows. Continuous: one call over every window that keeps ``--rows`` rows busy,
a freed row taking the next window. The two alternate (old, new, new, old, ...) on the CPU with tiny.en's real
weights over the long-form files; each run prints its seconds, decoder steps, sequence-steps (the rows stepped,
summed) and distinct batch sizes, then the ratios new / old, and checks that both give every window the same text.

    PYTHONPATH=. .venv/bin/python -m benchmarks.refill --rows 8 --repeats 2

``--record FILE``: decode the files once (tiny.en, today's batches of 16) and write each window's decoder steps
(its sampled tokens and end-of-text: ``Attempt.row_count``) as JSON: ``benchmarks/longform_token_counts.json``,
which the GPU benchmark's random weights end their sequences at (``benchmarks.gpu --engines refill``,
``random_weights``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onepass_whisper.domain.audio import Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.windowing import split_into_windows

REPO = Path(__file__).resolve().parent.parent
LONGFORM = REPO.parent / "shared" / "data" / "eval" / "longform"
COUNTS = Path(__file__).resolve().parent / "longform_token_counts.json"
GREEDY = TranscribeOptions(temperatures=(0.0,))  # the refilled pass is the greedy one; fallback is unchanged


class Counting:
    """A ``DecoderStep`` that records the batch size of each step it takes (``sizes``, shared)."""

    def __init__(self, step: Any, sizes: list[int]) -> None:
        self.inner = step
        self.sizes = sizes

    def step(self, tokens: Any, logit_positions: Sequence[int] = (-1,)) -> Any:
        if tokens.shape[1] == 1:  # prompts are not decoder steps
            self.sizes.append(int(tokens.shape[0]))
        return self.inner.step(tokens, logit_positions)

    def keep(self, rows: Any) -> None:
        self.inner.keep(rows)

    def put(self, rows: Any, fresh: Any) -> None:
        self.inner.put(rows, fresh.inner if isinstance(fresh, Counting) else fresh)


def counted(backend: Any, sizes: list[int]) -> None:
    """Make ``backend``'s steps record their batch sizes into ``sizes``."""
    prompt = type(backend).prompt

    def counting_prompt(features: Any, prompt_: Any, batch: int | None = None) -> Any:
        started = prompt(backend, features, prompt_, batch)
        return type(started)(Counting(started.step, sizes), started.logits, started.attention, started.no_speech)

    backend.prompt = counting_prompt


def longform_windows(files: Sequence[Path]) -> list[Window]:
    from onepass_whisper.adapters.audio_file import FileAudioSource

    source = FileAudioSource()
    return [w for number, f in enumerate(files) for w in split_into_windows(source.load(f).samples, source=number)]


def _load(model: str) -> Any:
    """``model``'s MLX decoder (an ``MlxWhisperDecoder``) from the cache the app uses, the fast BLAS loaded first."""
    from onepass_whisper.adapters.mlx import bootstrap

    bootstrap()  # the fast BLAS, before MLX loads
    from onepass_whisper.adapters.mlx import load_decoder
    from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
    from onepass_whisper.adapters.models import CachedModelSource

    decoder = load_decoder(CachedModelSource().resolve(model), model)
    assert isinstance(decoder, MlxWhisperDecoder)
    return decoder


def summary(sizes: Sequence[int]) -> dict[str, Any]:
    return {"steps": len(sizes), "sequence_steps": int(sum(sizes)), "distinct_sizes": len(set(sizes))}


def run_cpu(args: argparse.Namespace) -> None:
    from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder

    base = _load(args.model)
    windows = longform_windows(args.files)
    rows = args.rows
    sizes: list[int] = []
    counted(base.backend, sizes)
    refilled = MlxWhisperDecoder(base.model, args.model, base.alignment_heads, backend=base.backend, rows=rows)
    audio = sum(w.duration for w in windows)
    print(f"{len(windows)} windows, {audio:.0f} s of audio, {args.model}, rows {rows}")

    def old() -> list[Any]:
        return [
            c
            for start in range(0, len(windows), rows)
            for c in base.decode_batch(windows[start : start + rows], GREEDY)
        ]

    def new() -> list[Any]:
        return refilled.decode_batch(windows, GREEDY)

    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    texts: dict[str, list[str]] = {}
    order = ["old", "new"]
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            sizes.clear()
            start = time.perf_counter()
            chunks = (old if name == "old" else new)()
            seconds = time.perf_counter() - start
            texts[name] = [" ".join(s.text for s in c.segments) for c in chunks]
            line = {
                "engine": name,
                "seconds": round(seconds, 2),
                **summary(sizes),
                "realtime": round(audio / seconds, 1),
            }
            runs[name].append(line)
            print(json.dumps(line), flush=True)
    same = texts["old"] == texts["new"]
    print(f"the same text for every window: {same}")
    _ratios(runs)
    if not same:
        raise SystemExit("continuous batching changed a window's text")


def _ratios(runs: dict[str, list[dict[str, Any]]]) -> None:
    for key in ("seconds", "steps", "sequence_steps", "distinct_sizes"):
        old = [r[key] for r in runs["old"]]
        new = [r[key] for r in runs["new"]]
        print(f"{key}: old {old} new {new}, new / old (medians) {np.median(new) / np.median(old):.3f}")


def record(args: argparse.Namespace) -> None:
    decoder = _load(args.model)
    windows = longform_windows(args.files)
    counts: list[int] = []
    for start in range(0, len(windows), 16):
        group = windows[start : start + 16]
        features = decoder._encode(group)
        attempts = decoder._decode(features, ["en"] * len(group), GREEDY, 0.0, decoder._finish_below(group))
        counts += [a.row_count for a in attempts]
    content = {
        "model": args.model,
        "files": [f.name for f in args.files],
        "what": "decoder steps of each window (sampled tokens and end-of-text), greedy, in the files' order",
        "counts": counts,
    }
    args.record.write_text(json.dumps(content, indent=1) + "\n")
    print(f"{len(counts)} windows -> {args.record}: {counts}")


def recorded_counts(path: Path = COUNTS) -> list[int]:
    counts: list[int] = json.loads(path.read_text())["counts"]
    return counts


def random_weights(
    backend: Any,
    features_of: Callable[[int], Any],
    prompt: Any,
    rules: Any,
    counts: Sequence[int],
    rows: int,
    eot: int,
    limit: int,
) -> Iterator[dict[str, Any]]:
    """Today's compaction against continuous batching over windows that end at ``counts`` steps (random weights
    never end by themselves: each sequence is cut at its count, ``BatchResults.limits``), one after the other;
    yields each run's line. ``features_of(n)``: n windows' encoder output; ``prompt(n)``: their ``Prompt``."""
    import mlx.core as mx

    from onepass_whisper.adapters.mlx.loop import BatchResults
    from onepass_whisper.adapters.mlx.refill import Admitted

    limits = np.array(counts, np.int64)
    total = len(counts)
    for name in ("old", "new", "new", "old"):
        sizes: list[int] = []
        counted(backend, sizes)
        mx.synchronize()
        start = time.perf_counter()
        if name == "old":
            for first in range(0, total, rows):
                part = limits[first : first + rows]
                results = BatchResults(len(part), eot, limit, limits=part)
                backend.decode(features_of(len(part)), prompt(len(part)), rules, results, 0.0, None)
        else:
            waiting = list(range(total))

            def admit(wanted: int) -> Any:
                if not waiting:
                    return None
                taken = np.array([waiting.pop(0) for _ in range(min(wanted, len(waiting)))])
                started = backend.prompt(features_of(len(taken)), prompt(len(taken)), rows)
                return Admitted(taken, started.step, started.logits, started.attention, np.zeros(len(taken), np.int64))

            results = BatchResults(total, eot, limit, limits=limits)
            backend.decode_refilled(admit, rows, rules, results)
        mx.synchronize()
        seconds = time.perf_counter() - start
        del backend.prompt
        yield {
            "engine": f"refill-{name}",
            "rows": rows,
            "windows": total,
            "seconds": round(seconds, 3),
            **summary(sizes),
        }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=Path, nargs="*", default=sorted(LONGFORM.glob("*.wav")))
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--record", type=Path, help="write each window's decoder steps to this JSON file and exit")
    args = parser.parse_args(argv)
    if not args.files:
        raise SystemExit(f"no long-form files: pass --files, or provide {LONGFORM}")
    record(args) if args.record else run_cpu(args)


if __name__ == "__main__":
    main()


def bench_refill(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    """``benchmarks.gpu --engines refill``: large-v3's shapes, random float16 weights, the windows ending at the
    recorded tiny.en counts (cycled up to four batches' worth), today's compaction and continuous batching
    alternating (old, new, new, old a repeat); ``tokens`` is unused (the counts decide)."""
    import mlx.core as mx

    from benchmarks.gpu_ours import SOT_EN_TRANSCRIBE, fixed_length_options, random_large_v3
    from onepass_whisper.adapters.mlx.step.factory import Prompt

    decoder = random_large_v3()
    recorded = recorded_counts()
    limit = max(recorded)
    rules = decoder._rules(fixed_length_options(limit))
    dims = decoder.model.dims
    lines: list[dict[str, Any]] = []
    for batch in batches:
        counts = [recorded[i % len(recorded)] for i in range(max(len(recorded), 4 * batch))]
        pool = mx.random.normal((batch, dims.n_audio_ctx, dims.n_audio_state)).astype(mx.float16)
        mx.eval(pool)

        def prompt(n: int) -> Any:
            return Prompt(np.array([SOT_EN_TRANSCRIBE] * n, np.int32), 0, None)

        for repeat in range(max(2, repeats)):  # the first warms up (the compiled step's traces)
            got = list(random_weights(decoder.backend, lambda n: pool[:n], prompt, rules, counts, batch, 50257, limit))
            if not repeat:
                continue
            for line in got:
                print(json.dumps(line), flush=True)
            old = [g["seconds"] for g in got if g["engine"] == "refill-old"]
            new = [g["seconds"] for g in got if g["engine"] == "refill-new"]
            ratio = {"engine": "refill-ratio", "batch": batch, "new_over_old_seconds": round(sum(new) / sum(old), 3)}
            print(json.dumps(ratio), flush=True)
            lines += [*got, ratio]
    return lines
