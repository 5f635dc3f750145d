"""A second pass that teacher-forces the decoded words as single characters (Yeh, Meng, Tang 2025): its edges and
its cost, measured offline (issue 23 item 2).

Step 1 (``force``): each recorded window (``benchmarks.record_windows``) is encoded again and its decoded words are
fed to the decoder one character a token (a space token between words, ``<|notimestamps|>`` first, end-of-text
last); every head's cross-attention rows are kept, with where each word's first character and following space sit.
The decoder forward's time (the second pass's cost: the encoder output is the first pass's) is printed:

    PYTHONPATH=. .venv/bin/python -m benchmarks.char_forcing force /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/chars-ljspeech_mfa-base.pkl --model base

Step 2 (``score``): DTW over the chosen heads' character rows gives each word's first character's frame; those are
handed to ``DtwAligner`` as its token frames (the refinement and the lag as today's; the lag chosen on the first
set), and scored with ``app eval``'s ``score_corpus``:

    PYTHONPATH=. .venv/bin/python -m benchmarks.char_forcing score /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/chars-ljspeech_mfa-base.pkl /tmp/edges-timit_dev-base.pkl /tmp/chars-timit_dev-base.pkl
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import evolve, frozen
from numpy.typing import NDArray

from benchmarks.edge_heads import hypotheses, line, load_record, zscored
from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.adapters.dtw.path import dtw_path
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import Metrics, connected_boundary_errors, score_corpus
from onepass_whisper.domain.audio import DecodedChunk


def char_tokens(words: Sequence[str], tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """The characters' tokens, each word's first character's index and each word's following space's index (the
    last word's: end-of-text's)."""
    space = tokenizer.encode(" ")
    tokens: list[int] = []
    firsts: list[int] = []
    spaces: list[int] = []
    for i, word in enumerate(words):
        firsts.append(len(tokens))
        for c in word.strip() or word:
            tokens += tokenizer.encode(c)
        spaces.append(len(tokens))
        if i < len(words) - 1:
            tokens += space
    return tokens, firsts, spaces


def force(record_path: Path, output: Path, model_name: str) -> None:
    from onepass_whisper.entrypoints.container import Container

    container = Container()
    container.config.model.from_value(model_name)
    model = container.decoder().model  # type: ignore[attr-defined]  # first: it binds MLX's fast BLAS
    import mlx.core as mx
    from mlx_whisper.tokenizer import get_tokenizer

    from onepass_whisper.adapters.mlx.encoder import encode_on_host, window_mel

    tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language="en")
    prefix = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    record = load_record(record_path)
    kept: list[tuple[NDArray[np.float32], list[int], list[int]] | None] = []
    seconds = 0.0
    for chunk in record["chunks"]:
        words = [w for s in chunk.segments for w in s.words]
        if not words:
            kept.append(None)
            continue
        tokens, firsts, spaces = char_tokens(words, tokenizer)
        mel = window_mel(chunk.window.samples, model.dims.n_mels)[None].astype(
            model.decoder.token_embedding.weight.dtype
        )
        audio = encode_on_host(model, mel)
        mx.eval(audio)
        started = time.perf_counter()
        _, _, cross_qk = model.decoder(mx.array([[*prefix, *tokens, tokenizer.eot]]), audio)
        qk = mx.concatenate([q[0] for q in cross_qk], axis=0)  # (layers × heads) × positions × 1500
        mx.eval(qk)
        seconds += time.perf_counter() - started
        frames = chunk.attention.shape[-1]
        rows = np.array(qk[:, len(prefix) - 1 : len(prefix) + len(tokens), :frames].astype(mx.float32))
        kept.append((rows, firsts, spaces))
    with output.open("wb") as out:
        pickle.dump(kept, out)
    print(f"{len(kept)} windows -> {output}; the forced decoder passes took {seconds:.2f} s in all (batch 1)")


@frozen
class CharAligner:
    """``DtwAligner`` given token frames from DTW over the character rows of ``heads``."""

    forced: Mapping[int, tuple[NDArray[np.float32], list[int], list[int]]]  # chunk id -> rows, firsts, spaces
    heads: tuple[int, ...]  # indices into the layers × heads rows
    width: int
    refine: bool
    lag: float
    end_at_space: bool = False

    def align(self, chunk: DecodedChunk) -> Any:
        aligner = DtwAligner(refine=self.refine, lag_seconds=self.lag)
        entry = self.forced.get(id(chunk))
        if entry is None or chunk.attention.shape[-1] == 0:
            return aligner.align(chunk)
        rows, firsts, spaces = entry
        matrix = zscored(rows[list(self.heads)], self.width).mean(axis=0)
        path_rows, path_frames = dtw_path(-matrix)
        row_frames = path_frames[np.diff(path_rows, prepend=-1).astype(bool)]
        counts = [c for s in chunk.segments for c in s.word_token_counts]
        first_token = np.concatenate(([0], np.cumsum(counts)))
        frames = np.zeros(chunk.token_count + 1, np.int32)
        for w in range(len(counts)):
            frames[first_token[w] : first_token[w + 1]] = row_frames[firsts[w]]
        frames[-1] = row_frames[-1]  # end-of-text
        if self.end_at_space:  # each word ends at its space; the next starts there too (DTW leaves no gap)
            for w in range(1, len(counts)):
                frames[first_token[w] : first_token[w + 1]] = row_frames[spaces[w - 1]]
        return aligner.align(evolve(chunk, token_frames=frames))


def _load(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f)


def score(args: argparse.Namespace) -> None:
    sets = [(load_record(r), _load(c), r.name) for r, c in zip(args.sets[::2], args.sets[1::2], strict=True)]
    record0 = sets[0][0]
    heads = [tuple(h) for h in record0["heads"]]
    layers = 1 + max(layer for layer, _ in heads)
    choices = {
        "alignment heads": [heads.index(tuple(h)) for h in record0["alignment_heads"]],
        "last half": [i for i, (layer, _) in enumerate(heads) if layer >= layers // 2],
    }
    if args.alignment_heads_only:
        del choices["last half"]
    for extra in args.heads:
        choices[extra] = [heads.index(tuple(int(n) for n in h.split("."))) for h in extra.split("+")]
    for name, chosen in choices.items():
        for width in args.widths:
            for end_at_space in (False, True):

                def aligner(record: Any, forced: Any, refine: bool, lag: float) -> CharAligner:
                    by_id = {id(c): f for c, f in zip(record["chunks"], forced, strict=True) if f is not None}
                    return CharAligner(by_id, tuple(chosen), width, refine, lag, end_at_space)

                record, forced, _ = sets[0]
                raw = hypotheses(record, aligner(record, forced, False, 0.0))
                errors = connected_boundary_errors(record["refs"], raw, WhisperTextMetrics())
                lag = float(np.median(errors)) if errors.size else 0.0
                text = [f"{name}, width {width}{', ends at spaces' if end_at_space else ''} (lag {1000 * lag:+.0f} ms)"]
                for record, forced, label in sets:
                    metrics: Metrics = score_corpus(
                        record["refs"], hypotheses(record, aligner(record, forced, True, lag)), WhisperTextMetrics()
                    ).overall
                    text.append(line(label, metrics))
                print("  ".join(text), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    f = commands.add_parser("force")
    f.add_argument("record", type=Path)
    f.add_argument("output", type=Path)
    f.add_argument("--model", default="tiny.en")
    s = commands.add_parser("score")
    s.add_argument("sets", type=Path, nargs="+", help="record, forced, ...: the first pair chooses the lag")
    s.add_argument("--heads", nargs="*", default=[], help="more head lists, as 5.4+4.3")
    s.add_argument("--widths", type=int, nargs="+", default=[7, 3])
    s.add_argument("--alignment-heads-only", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "force":
        force(args.record, args.output, args.model)
    else:
        score(args)


if __name__ == "__main__":
    main()
