"""Check a model's word-timing lag estimate (``adapters/dtw/lag.py``) against labelled word times, beside the
other unlabelled estimate tried (``benchmarks/unlabelled_lag.py``).

    PYTHONPATH=. .venv/bin/python -m benchmarks.calibrate_lag ../shared/data/eval/ljspeech_mfa --model base

Transcribes every utterance of DATASET (``<id>.wav`` + ``<id>.json`` with word times, as ``app eval`` reads) with
refinement off, so the words carry DTW's raw times, and prints two estimates. Labelled: the median signed error of
the word edges that meet their neighbour without a pause in the reference
(``application.evaluation.connected_boundary_errors``). Unlabelled: the shift that best fits the heads' activity to
the windows' loudness, summed over every window (``lag_curve``, ``lag_of``), and the lag that leaves DTW's word starts
no median pull towards an energy valley (``adapters/dtw/lag.py``'s ``estimate_lag``, what the aligner uses); they need no word times, so they can be measured on any
speech. Positive: the model's words come late. Do not calibrate on the data you report accuracy on.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from attrs import define, field
from dependency_injector import providers

from benchmarks.unlabelled_lag import lag_curve, lag_of
from onepass_whisper.adapters.dtw import DtwAligner, attention_matrix, estimate_lag
from onepass_whisper.adapters.dtw.lag import window_evidence
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import Hypothesis, connected_boundary_errors
from onepass_whisper.domain.audio import DecodedChunk, LagEvidence
from onepass_whisper.domain.model import TranscribeOptions, Word
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.eval_command import read_corpus, transcribe_dataset


@define
class _Recording:
    """The raw DTW aligner, keeping each window's lag curve on the side."""

    inner: DtwAligner = DtwAligner(refine=False)
    curves: list[np.ndarray | None] = field(factory=list)
    evidence: list[LagEvidence] = field(factory=list)  # per window: word starts, levels
    frame_seconds: float = 0.02
    lock: threading.Lock = field(factory=threading.Lock)

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        if chunk.segments and chunk.attention.shape[1] > 1:
            curve = lag_curve(attention_matrix(chunk.attention)[:-1], chunk.window.samples, chunk.frame_seconds)
            with self.lock:
                self.curves.append(curve)
                self.frame_seconds = chunk.frame_seconds
        words = self.inner.align(chunk)
        starts = np.array([w.start for segment in words for w in segment][1:], dtype=np.float64)
        evidence = window_evidence(starts, chunk.window.samples)
        with self.lock:
            self.evidence.append(evidence)
        return words


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--language", default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many utterances per folder")
    args = parser.parse_args(argv)
    corpus = read_corpus(args.dataset, limit=args.limit)
    recording = _Recording()
    container = Container()
    container.config.model.from_value(args.model)
    container.config.align_processes.from_value(0)  # the curves are kept in this process
    container.aligner.override(providers.Object(recording))
    hypotheses = {
        name: Hypothesis.from_transcript(result.transcript)
        for name, result in transcribe_dataset(container.service(), corpus, TranscribeOptions(language=args.language))
        if result.transcript is not None
    }
    errors = 1000 * connected_boundary_errors([u.reference for u in corpus], hypotheses, WhisperTextMetrics())
    where = f"{len(hypotheses)} utterances in {args.dataset}"
    if errors.size:
        print(
            f"{args.model}: labelled lag {np.median(errors):+.0f} ms (median; mean {errors.mean():+.0f} ms) over "
            f"{errors.size} word edges of {where}"
        )
    unlabelled = lag_of(recording.curves, recording.frame_seconds)
    valleys = estimate_lag(recording.evidence, min_boundaries=1)
    if unlabelled is None or valleys is None:
        raise SystemExit("no window with contrast: nothing to estimate the lag from")
    windows = sum(c is not None for c in recording.curves)
    print(
        f"{args.model}: unlabelled lag, activity against loudness {1000 * unlabelled:+.0f} ms over {windows} "
        f"windows; DTW's word starts against energy valleys {1000 * valleys:+.0f} ms over "
        f"{sum(e.boundaries > 0 for e in recording.evidence)} windows of {where}"
    )


if __name__ == "__main__":
    main()
