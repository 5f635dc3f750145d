"""What packing short requests into shared windows (``app serve --pack-seconds``) costs in accuracy and gives in
throughput: the evaluation set's utterances submitted at once to the server's scheduler (in process, no HTTP),
with packing off and on, in turn, scored against their references as ``app eval`` scores.

    PYTHONPATH=. .venv/bin/python -m benchmarks.serve_packing --model tiny.en --pack-seconds 0,10 --repeats 2

Each setting's WER, word-edge MAE and F1@50 on the same utterances, its wall time for all of them, and the
packed/unpacked throughput ratio from the median of the repeats (the settings alternate, so a shared machine's
drifting load falls on both).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import Hypothesis, score_corpus
from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.domain.audio import Waveform
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import AudioSource
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.eval_command import read_corpus

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "eval"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pack-seconds", default="0,10")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=str(EVAL))
    parser.add_argument("--exclude", default="longform", help="comma-separated folders to leave out")
    parser.add_argument("--limit", type=int, default=None, help="utterances per folder")
    args = parser.parse_args(argv)

    corpus = read_corpus(Path(args.data), args.limit, exclude=args.exclude.split(","))
    container = Container()
    container.config.model.from_value(args.model)
    container.config.batch_size.from_value(args.batch_size)
    audio = container.audio()
    waveforms = [Waveform(_samples(audio, u.audio)) for u in corpus]
    seconds = sum(w.duration for w in waveforms)
    print(f"{len(corpus)} utterances, {seconds:.1f} s of audio, {args.model}, batch {args.batch_size}")
    options = TranscribeOptions(language="en")
    packs = [float(p) for p in args.pack_seconds.split(",")]
    walls: dict[float, list[float]] = {p: [] for p in packs}
    for repeat in range(args.repeats):
        for pack in packs if repeat % 2 == 0 else packs[::-1]:
            container.reset_singletons()  # a model is used on the thread that loaded it (MLX's streams are per thread)
            with BatchScheduler(
                container.decoder,
                container.aligner(),
                batch_size=args.batch_size,
                gather_seconds=0.2,
                max_requests=len(waveforms) + 1,
                pack_seconds=pack,
            ) as scheduler:
                scheduler.submit(waveforms[0], options).future.result()  # warm-up
                started = time.perf_counter()
                tickets = [scheduler.submit(w, options) for w in waveforms]
                transcripts = [t.future.result() for t in tickets]
                wall = time.perf_counter() - started
                stats = scheduler.stats()
            walls[pack].append(wall)
            hypotheses = {u.reference.name: Hypothesis.from_transcript(t) for u, t in zip(corpus, transcripts)}
            m = score_corpus([u.reference for u in corpus], hypotheses, WhisperTextMetrics()).overall
            print(
                f"pack {pack:g} s (repeat {repeat}): {seconds / wall:5.2f} audio s/s (wall {wall:.1f} s, "
                f"{stats.decoded_windows} windows decoded); WER {100 * m.wer:.2f} %, start/end MAE "
                f"{m.start_mae_ms:.0f}/{m.end_mae_ms:.0f} ms, F1@50 {m.f1_50:.2f}, F1@200 {m.f1_200:.2f}"
            )
    base = sorted(walls[packs[0]])[len(walls[packs[0]]) // 2]
    for pack in packs[1:]:
        median = sorted(walls[pack])[len(walls[pack]) // 2]
        print(f"throughput, pack {pack:g} s / pack {packs[0]:g} s: {base / median:.2f}x (median walls)")


def _samples(audio: AudioSource, path: Path) -> NDArray[np.float32]:
    return np.concatenate(list(audio.stream(path)))


if __name__ == "__main__":
    main()
