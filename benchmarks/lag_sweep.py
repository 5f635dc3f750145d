"""Re-time recorded windows (``benchmarks/record_windows.py``) with refinement off and on at several model lags, and
print ``app eval``'s timing numbers for each: how the refinement's constants behave on a set they were not chosen on.

    PYTHONPATH=. .venv/bin/python -m benchmarks.record_windows tests/data/eval/fr_librivox_mfa /tmp/fr-base.pkl \\
        --model base --language fr
    PYTHONPATH=. .venv/bin/python -m benchmarks.lag_sweep /tmp/fr-base.pkl --lags 0 -0.08 -0.05

The words are the recording's, so every row scores the same decoding; the refined row at the lag ``app eval`` used
(the estimate it took from the run's speech, ``adapters/dtw/lag.py``) reproduces its numbers (the WER column is the same
for every row and left out). The last columns repeat the MAE and bias without the matched pairs more than ``--far``
seconds off (a word paired with the wrong instance of itself, where recognition errors leave its twin unmatched).
Measurement only: nothing here feeds a constant.
"""

from __future__ import annotations

import argparse
import pickle
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw import DtwAligner
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import (
    Hypothesis,
    Metrics,
    Reference,
    TimedWord,
    matched_pairs,
    score_corpus,
)
from onepass_whisper.application.word_timing import timed_segments
from onepass_whisper.domain.audio import DecodedChunk
from onepass_whisper.domain.ports import Aligner


def hypotheses(chunks: Sequence[DecodedChunk], refs: Sequence[Reference], aligner: Aligner) -> dict[str, Hypothesis]:
    """Each recorded file's words and segments in file time, its windows in time order, timed by ``aligner``, keyed
    by its reference's name (a window's ``source`` indexes ``refs``, as ``record_windows`` keeps them)."""
    by_file: dict[int, list[tuple[float, list[TimedWord], list[tuple[float, float]], str]]] = defaultdict(list)
    for chunk in chunks:
        segments = timed_segments(aligner, chunk, word_timestamps=True)
        words = [TimedWord(w.text, w.start, w.end) for s in segments for w in s.words]
        text = "".join(s.text for s in segments)
        by_file[int(chunk.window.source)].append(
            (chunk.window.offset, words, [(s.start, s.end) for s in segments], text)
        )
    result = {}
    for source, parts in by_file.items():
        parts.sort(key=lambda p: p[0])
        name = refs[source].name
        result[name] = Hypothesis(
            " ".join(p[3] for p in parts),
            (w for p in parts for w in p[1]),
            (span for p in parts for span in p[2]),
        )
    return result


def close_pairs(
    refs: Sequence[Reference], hyps: Mapping[str, Hypothesis], metrics: WhisperTextMetrics, limit: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """Start and end errors (s) of the matched pairs whose edges are both within ``limit`` of the reference's, and
    how many pairs were left out: where recognition errors leave a word's twin unmatched, the matcher may pair it
    with another instance of the same word seconds away, and one such pair outweighs dozens of timing errors."""
    starts, ends = [], []
    for ref in refs:
        pairs, _, _ = matched_pairs(ref.words, hyps[ref.name].words if ref.name in hyps else (), metrics)
        starts += [h.start - r.start for r, h in pairs]
        ends += [h.end - r.end for r, h in pairs]
    start, end = np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64)
    keep = (np.abs(start) <= limit) & (np.abs(end) <= limit)
    return start[keep], end[keep], int((~keep).sum())


def row(label: str, m: Metrics, start: NDArray[np.float64], end: NDArray[np.float64], dropped: int) -> str:
    return (
        f"| {label} | {m.start_mae_ms:.0f} / {m.end_mae_ms:.0f} | {m.start_bias_ms:+.0f} / {m.end_bias_ms:+.0f} "
        f"| {100 * m.start_within_50:.0f} / {100 * m.end_within_50:.0f} | {m.f1_50:.2f} | {m.f1_200:.2f} "
        f"| {1000 * np.abs(start).mean():.0f} / {1000 * np.abs(end).mean():.0f} "
        f"| {1000 * start.mean():+.0f} / {1000 * end.mean():+.0f} | {dropped} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recording", type=Path)
    parser.add_argument("--lags", type=float, nargs="+", default=[0.0], help="model lags in seconds (- = early)")
    parser.add_argument(
        "--far", type=float, default=0.5, help="seconds: pairs further off are left out of the last columns"
    )
    args = parser.parse_args(argv)
    with args.recording.open("rb") as source:
        record = pickle.load(source)  # noqa: S301 - a file this project's record_windows wrote
    refs, chunks = record["refs"], record["chunks"]
    metrics = WhisperTextMetrics()
    aligners = [("off", DtwAligner(refine=False))]
    aligners += [(f"on, {1000 * lag:+.0f} ms", DtwAligner(refine=True, lag_seconds=lag)) for lag in args.lags]
    lines = []
    for label, aligner in aligners:
        hyps = hypotheses(chunks, refs, aligner)
        start, end, dropped = close_pairs(refs, hyps, metrics, args.far)
        lines.append(row(label, score_corpus(refs, hyps, metrics).overall, start, end, dropped))
    far = f"pairs ≤{args.far:g} s off"
    print(
        "| refinement, lag | start / end MAE ms | start / end bias ms | starts / ends ≤50 ms % | F1@50 | F1@200 "
        f"| MAE ms, {far} | bias ms, {far} | pairs left out |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
