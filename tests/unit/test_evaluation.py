"""The evaluation metrics on tiny hand-computed cases."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pytest

from onepass_whisper.application.evaluation import (
    Hypothesis,
    Reference,
    TimedWord,
    UtteranceScore,
    connected_boundary_errors,
    matched_pairs,
    report,
    score_corpus,
    score_utterance,
    summarize,
    uncovered_seconds,
)
from onepass_whisper.domain.model import Segment, Transcript, Word
from onepass_whisper.domain.ports import TextMetrics

FILLERS = {"uh", "um"}


class SimpleTextMetrics:
    """Lower case, letters and digits only, fillers dropped; plain Levenshtein over words."""

    def normalize(self, text: str) -> str:
        words = (re.sub(r"[^a-z0-9 ]", "", w) for w in text.lower().replace("-", " ").split())
        return " ".join(w for w in words if w and w not in FILLERS)

    def word_errors(self, reference: Sequence[str], hypothesis: Sequence[str]) -> int:
        row = list(range(len(hypothesis) + 1))
        for i, r in enumerate(reference, 1):
            diagonal, row[0] = row[0], i
            for j, h in enumerate(hypothesis, 1):
                diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
        return row[-1]


METRICS = SimpleTextMetrics()


def _conforms() -> None:  # mypy-only; never called
    _t: TextMetrics = SimpleTextMetrics()


def words(*items: tuple[str, float, float]) -> tuple[TimedWord, ...]:
    return tuple(TimedWord(text, start, end) for text, start, end in items)


# The cat sat down: three words match ("down" became "town", "now" is inserted).
REFERENCE = Reference(
    "utt",
    "folder",
    "The cat sat down.",
    words(("the", 0.0, 0.2), ("cat", 0.2, 0.5), ("sat", 0.5, 0.9), ("down", 1.0, 1.4)),
)
HYPOTHESIS = Hypothesis(
    " The cat, sat town now",
    words((" The", 0.03, 0.23), (" cat,", 0.24, 0.44), (" sat", 0.65, 1.05), (" town", 1.05, 1.3), (" now", 1.3, 1.5)),
)
# start errors +30, +40, +150 ms; end errors +30, -60, +150 ms


def test_matching_pairs_equal_normalised_words_in_order() -> None:
    pairs, n_ref, n_hyp = matched_pairs(REFERENCE.words, HYPOTHESIS.words, METRICS)

    assert [(r.text, h.text) for r, h in pairs] == [("the", " The"), ("cat", " cat,"), ("sat", " sat")]
    assert (n_ref, n_hyp) == (4, 5)


def test_matching_skips_words_that_normalise_to_nothing() -> None:
    reference = words(("uh", 0.0, 0.1), ("hello", 0.1, 0.5), ("--", 0.5, 0.5), ("world", 0.6, 1.0))
    hypothesis = words((" Hello", 0.1, 0.5), (" um", 0.5, 0.6), (" world.", 0.6, 1.0))

    pairs, n_ref, n_hyp = matched_pairs(reference, hypothesis, METRICS)

    assert [r.text for r, _ in pairs] == ["hello", "world"]
    assert (n_ref, n_hyp) == (2, 2)


def test_matching_realigns_after_an_insertion_and_a_deletion() -> None:
    reference = words(("a", 0, 1), ("b", 1, 2), ("c", 2, 3), ("d", 3, 4))
    hypothesis = words(("x", 0, 1), ("a", 0, 1), ("b", 1, 2), ("d", 3, 4))

    pairs, _, _ = matched_pairs(reference, hypothesis, METRICS)

    assert [(r.text, h.text) for r, h in pairs] == [("a", "a"), ("b", "b"), ("d", "d")]


def test_one_utterance_by_hand() -> None:
    metrics = summarize([score_utterance(REFERENCE, HYPOTHESIS, METRICS)])

    assert (metrics.utterances, metrics.reference_words, metrics.matched_words) == (1, 4, 3)
    assert metrics.wer == pytest.approx(2 / 4)  # down -> town, + now
    assert metrics.start_mae_ms == pytest.approx((30 + 40 + 150) / 3)
    assert metrics.end_mae_ms == pytest.approx((30 + 60 + 150) / 3)
    assert metrics.start_bias_ms == pytest.approx((30 + 40 + 150) / 3)
    assert metrics.end_bias_ms == pytest.approx((30 - 60 + 150) / 3)
    assert (metrics.start_within_50, metrics.start_within_100, metrics.start_within_200) == pytest.approx(
        (2 / 3, 2 / 3, 1.0)
    )
    assert (metrics.end_within_50, metrics.end_within_100, metrics.end_within_200) == pytest.approx((1 / 3, 2 / 3, 1.0))
    # 50 ms collar: only "the" has both ends within; 200 ms: all three matched words
    assert (metrics.precision_50, metrics.recall_50, metrics.f1_50) == pytest.approx((1 / 5, 1 / 4, 2 / 9))
    assert (metrics.precision_200, metrics.recall_200, metrics.f1_200) == pytest.approx((3 / 5, 3 / 4, 2 / 3))


def test_an_empty_hypothesis_deletes_every_word() -> None:
    metrics = summarize([score_utterance(REFERENCE, Hypothesis(""), METRICS)])

    assert metrics.wer == 1.0
    assert metrics.matched_words == 0
    assert math.isnan(metrics.start_mae_ms) and math.isnan(metrics.start_within_50)
    assert math.isnan(metrics.precision_50)
    assert (metrics.recall_50, metrics.f1_50) == (0.0, 0.0)


def test_words_pool_over_utterances_per_group_and_overall() -> None:
    perfect = Reference("b", "other", "one two", words(("one", 0.0, 0.5), ("two", 0.5, 1.0)))
    scores = [
        score_utterance(REFERENCE, HYPOTHESIS, METRICS),
        score_utterance(perfect, Hypothesis("one two", perfect.words), METRICS),
    ]

    result = report(scores)

    assert list(result.groups) == ["folder", "other"]
    assert result.groups["other"].wer == 0.0 and result.groups["other"].start_mae_ms == 0.0
    overall = result.overall
    assert (overall.utterances, overall.reference_words, overall.matched_words) == (2, 6, 5)
    assert overall.wer == pytest.approx(2 / 6)
    assert overall.start_mae_ms == pytest.approx((30 + 40 + 150) / 5)
    assert overall.f1_50 == pytest.approx(2 * 3 / (7 + 6))  # the, one, two
    assert overall.recall_200 == pytest.approx(5 / 6)


def test_summary_of_nothing_is_empty_not_an_error() -> None:
    metrics = summarize([])

    assert (metrics.utterances, metrics.reference_words, metrics.wer) == (0, 0, 0.0)
    assert math.isnan(metrics.f1_200)


def test_a_hypothesis_comes_from_a_transcript_s_words() -> None:
    transcript = Transcript(
        segments=[Segment(0.0, 1.0, " Hi there.", [Word(" Hi", 0.0, 0.4, 0.9), Word(" there.", 0.4, 1.0, 0.8)])],
        language="en",
        duration=1.0,
    )

    hypothesis = Hypothesis.from_transcript(transcript)

    assert hypothesis.text == "Hi there."
    assert hypothesis.words == words((" Hi", 0.0, 0.4), (" there.", 0.4, 1.0))


def test_utterance_score_keeps_signed_errors_as_float64() -> None:
    score = score_utterance(REFERENCE, HYPOTHESIS, METRICS)

    assert isinstance(score, UtteranceScore)
    assert score.start_errors.dtype == np.float64
    np.testing.assert_allclose(score.end_errors, [0.03, -0.06, 0.15], atol=1e-12)


def test_a_corpus_without_a_hypothesis_for_an_utterance_scores_it_as_silence() -> None:
    result = score_corpus([REFERENCE], {}, METRICS)

    assert result.overall.wer == 1.0
    assert list(result.groups) == ["folder"]


def test_connected_boundary_errors_skip_the_edges_next_to_pauses() -> None:
    # "a" and "b" meet (gap 0.02 s), then a pause, then "c"; the hypothesis is 0.1 s late everywhere, 0.3 s at the
    # pause. Only b's start and a's end meet a neighbour without a pause; "x" is not in the reference.
    reference = Reference("u", "g", "a b c", words(("a", 0.0, 0.5), ("b", 0.52, 1.0), ("c", 2.0, 2.5)))
    hypothesis = Hypothesis("a b x c", words(("a", 0.1, 0.6), ("b", 0.62, 1.3), ("x", 1.3, 1.4), ("c", 1.7, 2.6)))
    errors = connected_boundary_errors([reference], {"u": hypothesis}, METRICS)
    assert sorted(errors.round(6).tolist()) == [0.1, 0.1]


def test_connected_boundary_errors_of_missing_hypotheses_are_empty() -> None:
    reference = Reference("u", "g", "a b", words(("a", 0.0, 0.5), ("b", 0.5, 1.0)))
    assert connected_boundary_errors([reference], {}, METRICS).size == 0


def test_uncovered_seconds_is_the_speech_in_no_segment() -> None:
    assert uncovered_seconds([(0.0, 1.0), (2.0, 4.0)], [(0.5, 2.5)]) == (3.0, 2.0)  # 0-0.5 and 2.5-4
    assert uncovered_seconds([(0.0, 1.0), (0.5, 1.5)], []) == (1.5, 1.5)  # overlapping words counted once
    assert uncovered_seconds([(0.0, 1.0)], [(0.0, 0.6), (0.4, 2.0)]) == (1.0, 0.0)  # overlapping segments too
    assert uncovered_seconds([], [(0.0, 1.0)]) == (0.0, 0.0)


def test_uncovered_speech_pools_seconds_and_counts_a_missing_hypothesis_as_silence() -> None:
    reference = Reference("utt", "g", "one two", words(("one", 0.0, 1.0), ("two", 2.0, 3.0)))
    other = Reference("other", "g", "three", words(("three", 0.0, 2.0)))
    lost_second = Hypothesis("one", words(("one", 0.0, 1.0)), segments=[(0.0, 1.2)])
    result = score_corpus([reference, other], {"utt": lost_second}, METRICS)
    assert result.overall.uncovered_speech == pytest.approx((1.0 + 2.0) / (2.0 + 2.0))
    unknown = Hypothesis("one", words(("one", 0.0, 1.0)))  # an engine that gives no segments: not measured
    assert math.isnan(summarize([score_utterance(reference, unknown, METRICS)]).uncovered_speech)


def test_a_transcripts_segments_are_its_hypothesis_spans() -> None:
    segment = Segment(0.5, 1.5, " one", (Word(" one", 0.6, 1.4, 0.9),))
    hypothesis = Hypothesis.from_transcript(Transcript(segments=(segment,), language="en", duration=2.0))
    assert hypothesis.segments == ((0.5, 1.5),)
