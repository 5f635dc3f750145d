"""``lag_curve`` / ``lag_of``: a model's lag from unlabelled audio, on synthetic windows whose attention trails or
leads their sound by a known shift."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from benchmarks.unlabelled_lag import MAX_LAG_SECONDS, lag_curve, lag_of
from onepass_whisper.adapters.dtw.aligner import attention_matrix
from tests.unit.test_aligner import bursts

FRAME = 0.02
WORDS = [(0.30, 0.80), (1.10, 1.50), (1.90, 2.60), (2.80, 3.20)]  # seconds: each word a burst, pauses between


def shifted_attention(words: Sequence[tuple[float, float]], lag: float, frames: int) -> NDArray[np.float32]:
    """1 head × (words + 1) × frames: word i's row attends to its burst moved ``lag`` later; the last row is
    end-of-text's."""
    attention = np.zeros((1, len(words) + 1, frames), dtype=np.float32)
    for row, (lo, hi) in enumerate(words):
        attention[0, row, round((lo + lag) / FRAME) : round((hi + lag) / FRAME)] = 10.0
    return attention


@pytest.mark.parametrize("lag", [-0.08, 0.0, 0.06, 0.1])
def test_the_lag_is_the_shift_of_the_attention_against_the_sound(lag: float) -> None:
    samples = bursts(WORDS, 3.7)
    matrix = attention_matrix(shifted_attention(WORDS, lag, 185))[:-1]
    estimate = lag_of([lag_curve(matrix, samples, FRAME)], FRAME)
    assert estimate == pytest.approx(lag, abs=FRAME / 2)


def test_windows_add_up_and_windows_without_evidence_count_for_nothing() -> None:
    samples = bursts(WORDS, 3.7)
    good = lag_curve(attention_matrix(shifted_attention(WORDS, 0.1, 185))[:-1], samples, FRAME)
    silent = lag_curve(attention_matrix(shifted_attention(WORDS, 0.1, 185))[:-1], bursts([], 3.7), FRAME)
    assert silent is None  # no contrast: no pause to tell the lag by
    assert lag_of([good, silent, good], FRAME) == pytest.approx(0.1, abs=FRAME / 2)
    assert lag_of([silent], FRAME) is None and lag_of([], FRAME) is None


def test_the_curve_spans_the_largest_lag_looked_for() -> None:
    curve = lag_curve(attention_matrix(shifted_attention(WORDS, 0.0, 185))[:-1], bursts(WORDS, 3.7), FRAME)
    assert curve is not None and len(curve) == 2 * round(MAX_LAG_SECONDS / FRAME) + 1
    assert np.all(np.abs(curve) <= 1.0 + 1e-9)
