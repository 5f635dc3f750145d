"""Measure a model's word-timing lag for ``adapters/dtw/calibration.py``.

    PYTHONPATH=. .venv/bin/python -m benchmarks.calibrate_lag ../shared/data/eval/ljspeech_mfa --model base

Transcribes every utterance of DATASET (``<id>.wav`` + ``<id>.json`` with word times, as ``app eval`` reads) with
refinement off, so the words carry DTW's raw times, and prints the median signed error of the word edges that meet
their neighbour without a pause in the reference (``application.evaluation.connected_boundary_errors``). Positive:
the model's words come late. Do not calibrate on the data you report accuracy on.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import Hypothesis, connected_boundary_errors
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.eval_command import read_corpus, transcribe_corpus


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args(argv)
    corpus = read_corpus(args.dataset)
    container = Container()
    container.config.model.from_value(args.model)
    container.config.refine.from_value(False)
    hypotheses = {
        name: Hypothesis.from_transcript(result.transcript)
        for name, result in transcribe_corpus(container.service(), corpus, TranscribeOptions())
        if result.transcript is not None
    }
    errors = connected_boundary_errors([u.reference for u in corpus], hypotheses, WhisperTextMetrics())
    if errors.size == 0:
        raise SystemExit("no matched word edges without a pause: nothing to calibrate on")
    ms = 1000 * errors
    print(
        f"{args.model}: lag {np.median(ms):+.0f} ms (median; mean {ms.mean():+.0f} ms) over {ms.size} word edges"
        f" of {len(hypotheses)} utterances in {args.dataset}"
    )


if __name__ == "__main__":
    main()
