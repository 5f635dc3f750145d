"""Accuracy of transcripts against references with word times: WER, word timing errors, collar P/R/F1, and the
share of the reference's speech that no output segment covers.

Definitions (``../shared/data/eval/README.md``): hypothesis and reference words are matched after normalisation
with difflib's ``SequenceMatcher`` (as ``shared/tools/score-words``); timing errors are taken over matched pairs; a
hypothesis word is a true positive at a collar when its text matches a reference word and both its start and end lie
within the collar of that word's. Uncovered speech: the seconds of the reference words' time (their union) that lie
in no output segment, over the seconds of the reference words' time: speech the output lost (a window's rest that
was never decoded), whatever its words. Scores pool words and seconds over utterances (micro average), per folder
and overall.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from onepass_whisper.domain.model import Transcript
from onepass_whisper.domain.ports import TextMetrics

SHARE_THRESHOLDS_MS = (50, 100, 200)  # "share within" columns
COLLARS_MS = (50, 200)  # 50 ms as CrisperWhisper's table, 200 ms as the WhisperX paper


def _timed(ws: Iterable[TimedWord]) -> tuple[TimedWord, ...]:
    return tuple(ws)


@frozen
class TimedWord:
    text: str
    start: float  # seconds
    end: float  # seconds


Span = tuple[float, float]  # (start, end) seconds


def _spans(spans: Iterable[Span] | None) -> tuple[Span, ...] | None:
    return None if spans is None else tuple((float(a), float(b)) for a, b in spans)


@frozen
class Hypothesis:
    """What an engine said for one utterance; ``segments``: its output segments' spans (None: not known, and
    uncovered speech is not measured)."""

    text: str
    words: tuple[TimedWord, ...] = field(default=(), converter=_timed)
    segments: tuple[Span, ...] | None = field(default=None, converter=_spans)

    @classmethod
    def from_transcript(cls, transcript: Transcript) -> Hypothesis:
        return cls(
            transcript.text,
            (TimedWord(w.text, w.start, w.end) for w in transcript.words),
            ((s.start, s.end) for s in transcript.segments),
        )


@frozen
class Reference:
    """One utterance of an evaluation set: its text and its words with times."""

    name: str  # the file stem
    group: str  # the source folder it came from
    text: str
    words: tuple[TimedWord, ...] = field(converter=_timed)


def _deltas(xs: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(xs, dtype=np.float64)


@frozen(eq=False)
class UtteranceScore:
    """The counts and matched-word timing errors of one utterance, before pooling."""

    group: str
    reference_words: int  # after normalisation of the whole text (WER's denominator)
    word_errors: int
    reference_timed: int  # timed reference words with a non-empty normalised text (recall's denominator)
    hypothesis_timed: int  # same for the hypothesis (precision's denominator)
    start_errors: NDArray[np.float64] = field(converter=_deltas)  # (matched,) hypothesis - reference, seconds
    end_errors: NDArray[np.float64] = field(converter=_deltas)  # (matched,)
    speech_seconds: float = 0.0  # the reference words' time; 0 where the hypothesis' segments are not known
    uncovered_seconds: float = 0.0  # of that, in no output segment


@frozen
class Metrics:
    """Pooled scores. Times in ms; shares and P/R/F1 in [0, 1]; NaN where nothing was matched."""

    utterances: int
    reference_words: int
    wer: float
    matched_words: int
    start_mae_ms: float
    end_mae_ms: float
    start_bias_ms: float  # mean signed error, hypothesis - reference: negative = early
    end_bias_ms: float
    start_within_50: float
    start_within_100: float
    start_within_200: float
    end_within_50: float
    end_within_100: float
    end_within_200: float
    precision_50: float
    recall_50: float
    f1_50: float
    precision_200: float
    recall_200: float
    f1_200: float
    uncovered_speech: float = float("nan")  # seconds of reference speech in no output segment / speech seconds


@frozen
class EvaluationReport:
    groups: Mapping[str, Metrics]  # by source folder, sorted by name
    overall: Metrics


def matching_key(text: str, metrics: TextMetrics) -> str:
    """The text a word is matched by: normalised, spaces removed ("Don't" -> "donot"); empty for fillers."""
    return "".join(metrics.normalize(text).split())


def matched_pairs(
    reference: Sequence[TimedWord], hypothesis: Sequence[TimedWord], metrics: TextMetrics
) -> tuple[list[tuple[TimedWord, TimedWord]], int, int]:
    """Reference/hypothesis word pairs with equal matching keys, aligned by ``SequenceMatcher``.

    Returns the pairs and the numbers of reference and hypothesis words that have a non-empty key.
    """
    ref = [(w, k) for w in reference if (k := matching_key(w.text, metrics))]
    hyp = [(w, k) for w in hypothesis if (k := matching_key(w.text, metrics))]
    matcher = difflib.SequenceMatcher(a=[k for _, k in ref], b=[k for _, k in hyp], autojunk=False)
    pairs = [
        (ref[block.a + i][0], hyp[block.b + i][0]) for block in matcher.get_matching_blocks() for i in range(block.size)
    ]
    return pairs, len(ref), len(hyp)


def score_utterance(reference: Reference, hypothesis: Hypothesis, metrics: TextMetrics) -> UtteranceScore:
    ref_words = metrics.normalize(reference.text).split()
    hyp_words = metrics.normalize(hypothesis.text).split()
    pairs, n_ref, n_hyp = matched_pairs(reference.words, hypothesis.words, metrics)
    speech = [(w.start, w.end) for w in reference.words]
    speech_seconds, uncovered = (
        (0.0, 0.0) if hypothesis.segments is None else uncovered_seconds(speech, hypothesis.segments)
    )
    return UtteranceScore(
        group=reference.group,
        reference_words=len(ref_words),
        word_errors=metrics.word_errors(ref_words, hyp_words),
        reference_timed=n_ref,
        hypothesis_timed=n_hyp,
        start_errors=np.array([h.start - r.start for r, h in pairs], dtype=np.float64),
        end_errors=np.array([h.end - r.end for r, h in pairs], dtype=np.float64),
        speech_seconds=speech_seconds,
        uncovered_seconds=uncovered,
    )


def uncovered_seconds(speech: Iterable[Span], covered: Iterable[Span]) -> tuple[float, float]:
    """The seconds of the union of ``speech``'s spans, and of those the seconds in none of ``covered``'s."""
    speech_union, covered_union = _union(speech), _union(covered)
    total = sum(end - start for start, end in speech_union)
    inside = sum(
        max(0.0, min(end, c_end) - max(start, c_start))
        for start, end in speech_union
        for c_start, c_end in covered_union
    )
    return total, max(0.0, total - inside)


def _union(spans: Iterable[Span]) -> list[Span]:
    """Non-empty ``spans`` merged where they overlap or touch, in order."""
    merged: list[Span] = []
    for start, end in sorted((a, b) for a, b in spans if b > a):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def summarize(scores: Sequence[UtteranceScore]) -> Metrics:
    """Pool the words of ``scores`` into one set of metrics."""
    starts = np.concatenate([s.start_errors for s in scores]) if scores else np.zeros(0)
    ends = np.concatenate([s.end_errors for s in scores]) if scores else np.zeros(0)
    ref_words = sum(s.reference_words for s in scores)
    errors = sum(s.word_errors for s in scores)
    n_ref = sum(s.reference_timed for s in scores)
    n_hyp = sum(s.hypothesis_timed for s in scores)
    within_start = {ms: _share(np.abs(starts) <= ms / 1000) for ms in SHARE_THRESHOLDS_MS}
    within_end = {ms: _share(np.abs(ends) <= ms / 1000) for ms in SHARE_THRESHOLDS_MS}
    prf = {ms: _precision_recall_f1(_true_positives(starts, ends, ms / 1000), n_hyp, n_ref) for ms in COLLARS_MS}
    speech = sum(s.speech_seconds for s in scores)
    return Metrics(
        utterances=len(scores),
        reference_words=ref_words,
        wer=errors / ref_words if ref_words else (float("inf") if errors else 0.0),
        matched_words=len(starts),
        start_mae_ms=_mean_ms(np.abs(starts)),
        end_mae_ms=_mean_ms(np.abs(ends)),
        start_bias_ms=_mean_ms(starts),
        end_bias_ms=_mean_ms(ends),
        start_within_50=within_start[50],
        start_within_100=within_start[100],
        start_within_200=within_start[200],
        end_within_50=within_end[50],
        end_within_100=within_end[100],
        end_within_200=within_end[200],
        precision_50=prf[50][0],
        recall_50=prf[50][1],
        f1_50=prf[50][2],
        precision_200=prf[200][0],
        recall_200=prf[200][1],
        f1_200=prf[200][2],
        uncovered_speech=sum(s.uncovered_seconds for s in scores) / speech if speech else float("nan"),
    )


def report(scores: Sequence[UtteranceScore]) -> EvaluationReport:
    """Metrics per source folder and over all utterances."""
    groups = sorted({s.group for s in scores})
    return EvaluationReport(
        groups={g: summarize([s for s in scores if s.group == g]) for g in groups}, overall=summarize(scores)
    )


def score_corpus(
    references: Sequence[Reference], hypotheses: Mapping[str, Hypothesis], metrics: TextMetrics
) -> EvaluationReport:
    """Score each reference against the hypothesis of the same name (a missing one counts as silence)."""
    silence = Hypothesis("", segments=())
    return report([score_utterance(r, hypotheses.get(r.name, silence), metrics) for r in references])


def _true_positives(starts: NDArray[np.float64], ends: NDArray[np.float64], collar: float) -> int:
    return int(np.count_nonzero((np.abs(starts) <= collar) & (np.abs(ends) <= collar)))


def _precision_recall_f1(
    true_positives: int, hypothesis_words: int, reference_words: int
) -> tuple[float, float, float]:
    precision = true_positives / hypothesis_words if hypothesis_words else float("nan")
    recall = true_positives / reference_words if reference_words else float("nan")
    total = hypothesis_words + reference_words
    return precision, recall, 2 * true_positives / total if total else float("nan")


def _mean_ms(seconds: NDArray[np.float64]) -> float:
    return float(1000 * seconds.mean()) if len(seconds) else float("nan")


def _share(hits: NDArray[np.bool_]) -> float:
    return float(hits.mean()) if len(hits) else float("nan")


CONNECTED_GAP_SECONDS = 0.05  # reference words this close meet without a pause (a boundary DTW can place alone)


def connected_boundary_errors(
    references: Sequence[Reference], hypotheses: Mapping[str, Hypothesis], metrics: TextMetrics
) -> NDArray[np.float64]:
    """Signed errors (hypothesis - reference, seconds) of the matched word edges that the reference shows meeting
    their neighbour without a pause: starts after, and ends before, a gap of at most ``CONNECTED_GAP_SECONDS``.

    Their median is a model's lag (the labelled check of ``adapters/dtw/lag.py``'s estimate: ``benchmarks/calibrate_lag.py``):
    edges next to pauses carry DTW's pause error as well, so they are left out.
    """
    errors: list[float] = []
    for reference in references:
        hypothesis = hypotheses.get(reference.name)
        if hypothesis is None:
            continue
        words = reference.words
        meeting = [(a, b) for a, b in zip(words, words[1:]) if b.start - a.end <= CONNECTED_GAP_SECONDS]
        connected_start, connected_end = {id(b) for _, b in meeting}, {id(a) for a, _ in meeting}
        pairs, _, _ = matched_pairs(words, hypothesis.words, metrics)
        errors += [h.start - r.start for r, h in pairs if id(r) in connected_start]
        errors += [h.end - r.end for r, h in pairs if id(r) in connected_end]
    return np.array(errors, dtype=np.float64)
