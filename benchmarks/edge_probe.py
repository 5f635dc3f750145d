"""The encoder boundary probe on top of either word-piece DTW or the character-forcing pass, measured offline
(issue 23 item 2, third round).

Reads the records of ``benchmarks.record_windows --all-heads``, the character rows of ``benchmarks.char_forcing force``
and the encoder blocks of ``benchmarks.encoder_boundaries features``, for a choice set (the first three paths) and
check sets (three paths each). The probe is trained on the choice set (scored there by two-fold cross-validation over
its windows) and used unchanged on the checks; each timing's lag is chosen on the choice set:

    PYTHONPATH=. .venv/bin/python -m benchmarks.edge_probe \\
        /tmp/edges-ljspeech_mfa-base.pkl /tmp/chars-ljspeech_mfa-base.pkl /tmp/enc-ljspeech_mfa-base.pkl \\
        /tmp/edges-timit_dev-base.pkl /tmp/chars-timit_dev-base.pkl /tmp/enc-timit_dev-base.pkl \\
        --inner today chars --layers 4 5 --reach 0.06 0.1
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from benchmarks.char_forcing import CharAligner
from benchmarks.edge_heads import RuleAligner, hypotheses, labelled_lag, line, load_record, rule_default
from benchmarks.encoder_boundaries import Probe, regrouped, train
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import connected_boundary_errors, score_corpus
from onepass_whisper.domain.audio import DecodedChunk


def _load(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f)


@frozen
class Set:
    name: str
    record: Mapping[str, Any]
    forced: Sequence[Any]
    encoded: Sequence[NDArray[np.float16]]


def char_aligner(s: Set, lag: float, refine: bool = True) -> CharAligner:
    heads = [tuple(h) for h in s.record["heads"]]
    chosen = tuple(heads.index(tuple(h)) for h in s.record["alignment_heads"])
    by_id = {id(c): f for c, f in zip(s.record["chunks"], s.forced, strict=True) if f is not None}
    return CharAligner(by_id, chosen, 7, refine, lag)


def rule_aligner(s: Set, lag: float, refine: bool = True) -> RuleAligner:
    return RuleAligner(rule_default, tuple(map(tuple, s.record["heads"])), s.record, refine, lag)


@frozen
class Moved:
    """An inner timing, then boundaries moved to the probe's most probable frame within ``reach``.

    ``pauses``: also the edges next to a pause (a word's start after one, its end before one), each alone, kept
    inside its word. ``sigma``: the probabilities weighted by a Gaussian of the distance (seconds; 0: none)."""

    inner: Any
    probes: Mapping[int, Probe]
    encoded: Mapping[int, NDArray[np.float16]]
    reach: float
    pauses: bool = False
    sigma: float = 0.0

    def _best(self, p: NDArray[np.float64], b: float, lo: int, hi: int, fs: float) -> float | None:
        lo = max(lo, int((b - self.reach) / fs))
        hi = min(hi, int((b + self.reach) / fs), len(p) - 1)
        if hi < lo:
            return None
        window = p[lo : hi + 1]
        if self.sigma > 0:
            centres = (np.arange(lo, hi + 1) + 0.5) * fs
            window = window * np.exp(-0.5 * ((centres - b) / self.sigma) ** 2)
        return (lo + int(np.argmax(window)) + 0.5) * fs

    def align(self, chunk: DecodedChunk) -> Any:
        words = self.inner.align(chunk)
        flat = [w for segment in words for w in segment]
        if not flat or id(chunk) not in self.probes:
            return words
        p = self.probes[id(chunk)].probabilities(self.encoded[id(chunk)])
        fs = chunk.frame_seconds
        starts = [w.start for w in flat]
        ends = [w.end for w in flat]
        for i in range(len(flat)):
            connected = i > 0 and abs(starts[i] - ends[i - 1]) <= 1e-6
            if connected:
                t = self._best(p, starts[i], int(starts[i - 1] / fs) + 1, int(ends[i] / fs) - 1, fs)
                if t is not None:
                    starts[i] = ends[i - 1] = t
            elif self.pauses:  # a start after a pause (or the window's first)
                lo = int(ends[i - 1] / fs) if i > 0 else 0
                t = self._best(p, starts[i], lo, int(ends[i] / fs) - 1, fs)
                if t is not None:
                    starts[i] = t
            if self.pauses and (i == len(flat) - 1 or abs(starts[i + 1] - ends[i]) > 1e-6):  # an end before a pause
                hi = int(starts[i + 1] / fs) if i < len(flat) - 1 else len(p) - 1
                t = self._best(p, ends[i], int(starts[i] / fs) + 1, hi, fs)
                if t is not None:
                    ends[i] = t
        return regrouped(words, starts, ends)


def score(s: Set, aligner: Any) -> str:
    return line(s.name, score_corpus(s.record["refs"], hypotheses(s.record, aligner), WhisperTextMetrics()).overall)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "paths", type=Path, nargs="+", help="record, chars (- for none), features; the first triple chooses"
    )
    parser.add_argument("--inner", nargs="+", default=["today", "chars"])
    parser.add_argument("--layers", type=int, nargs="+", default=[4])
    parser.add_argument("--context", type=int, nargs="+", default=[1])
    parser.add_argument("--l2", type=float, default=10.0)
    parser.add_argument("--reach", type=float, nargs="+", default=[0.06, 0.1])
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.0])
    parser.add_argument("--pauses", choices=["no", "yes", "both"], default="no")
    args = parser.parse_args(argv)
    sets = [
        Set(r.name.removesuffix(".pkl"), load_record(r), _load(c) if str(c) != "-" else [], _load(e))
        for r, c, e in zip(args.paths[::3], args.paths[1::3], args.paths[2::3], strict=True)
    ]
    choice = sets[0]
    inners: dict[str, Any] = {}
    for name in args.inner:
        make = char_aligner if name == "chars" else rule_aligner
        if name == "chars":
            raw = hypotheses(choice.record, make(choice, 0.0, False))
            errors = connected_boundary_errors(choice.record["refs"], raw, WhisperTextMetrics())
            lag = float(np.median(errors))
        else:
            lag = labelled_lag(choice.record, rule_default)
        inners[name] = (make, lag)
        print(f"{name} (lag {1000 * lag:+.0f} ms)  " + "  ".join(score(s, make(s, lag)) for s in sets), flush=True)
    n = len(choice.record["chunks"])
    folds = [list(range(0, n, 2)), list(range(1, n, 2))]
    pauses = {"no": [False], "yes": [True], "both": [False, True]}[args.pauses]
    for layer in args.layers:
        for context in args.context:
            probes: dict[int, Probe] = {}
            for k, fold in enumerate(folds):
                p = train(choice.record, choice.encoded, folds[1 - k], layer, context, args.l2)
                probes.update({id(choice.record["chunks"][i]): p for i in fold})
            full = train(choice.record, choice.encoded, range(n), layer, context, args.l2)
            by_set = [probes] + [{id(c): full for c in s.record["chunks"]} for s in sets[1:]]
            for name, (make, lag) in inners.items():
                for reach in args.reach:
                    for sigma in args.sigma:
                        for pause in pauses:
                            text = [f"{name} + probe block {layer} ctx {context} reach {reach} sigma {sigma}"]
                            text[0] += " pauses" if pause else ""
                            for s, chosen in zip(sets, by_set, strict=True):
                                encoded = {id(c): e for c, e in zip(s.record["chunks"], s.encoded, strict=True)}
                                text.append(score(s, Moved(make(s, lag), chosen, encoded, reach, pause, sigma)))
                            print("  ".join(text), flush=True)


if __name__ == "__main__":
    main()
