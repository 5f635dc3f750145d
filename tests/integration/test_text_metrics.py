"""The real text metrics adapter: Whisper's English normaliser and jiwer."""

from __future__ import annotations

from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import TextMetrics, matching_key


def _conforms() -> None:  # mypy-only; never called
    _t: TextMetrics = WhisperTextMetrics()


def test_normalises_as_whisper_does() -> None:
    metrics = WhisperTextMetrics()

    assert metrics.normalize("Mr. Smith, uh, paid twenty-five Colours!") == "mister smith paid 25 colors"
    assert matching_key(" Don't", metrics) == "donot"
    assert matching_key(" um,", metrics) == ""


def test_counts_substitutions_deletions_and_insertions() -> None:
    metrics = WhisperTextMetrics()

    assert metrics.word_errors(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
    assert metrics.word_errors(["a", "b"], []) == 2
    assert metrics.word_errors([], ["a"]) == 1
    assert metrics.word_errors([], []) == 0
