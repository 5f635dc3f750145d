"""Properties of ``median_filter``, with a numpy oracle: mirrored edges without repeating the edge sample."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.filters import median_filter
from tests.strategies import finite_floats, odd_widths, signals


def reference_median_filter(x: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    half = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    return np.asarray(np.median(sliding_window_view(padded, width, axis=-1), axis=-1), dtype=np.float64)


@given(x=signals(), width=odd_widths())
def test_median_filter_keeps_shape_and_dtype(x: NDArray[np.float64], width: int) -> None:
    y = median_filter(x, width)
    assert (y.shape, y.dtype) == (x.shape, x.dtype)


@given(x=signals())
def test_width_one_is_the_identity(x: NDArray[np.float64]) -> None:
    assert np.array_equal(median_filter(x, 1), x)


@given(x=signals(), width=odd_widths(), c=finite_floats())
def test_median_filter_commutes_with_a_shift(x: NDArray[np.float64], width: int, c: float) -> None:
    assert np.array_equal(median_filter(x + c, width), median_filter(x, width) + c)


@given(x=signals(), width=odd_widths())
def test_median_filter_stays_within_the_range(x: NDArray[np.float64], width: int) -> None:
    y = median_filter(x, width)
    assert x.min() <= y.min() and y.max() <= x.max()


@given(x=signals(), width=odd_widths())
def test_median_filter_equals_the_numpy_oracle(x: NDArray[np.float64], width: int) -> None:
    assert np.array_equal(median_filter(x, width), reference_median_filter(x, width))


def test_median_filter_keeps_float32() -> None:
    x = np.arange(10, dtype=np.float32)[::-1].reshape(2, 5)
    assert median_filter(x, 3).dtype == np.float32


@pytest.mark.parametrize("width", [0, 2, -3])
def test_median_filter_rejects_even_or_non_positive_widths(width: int) -> None:
    with pytest.raises(ValueError, match="odd"):
        median_filter(np.zeros(5), width)


@given(x=signals())
def test_whispers_width_seven_equals_the_numpy_oracle(x: NDArray[np.float64]) -> None:
    # width 7 takes the sorting-network path: every input shape, short ones (mirrored more than once) included
    assert np.array_equal(median_filter(x, 7), reference_median_filter(x, 7))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_width_seven_in_blocks_of_rows_equals_the_numpy_oracle(dtype: type[np.floating]) -> None:
    # large-v3's shapes: the network runs on blocks of rows (cache-sized), so here blocks meet inside the array
    x = np.random.default_rng(7).normal(size=(3, 101, 1500)).astype(dtype)
    x[1, 50, 700:720] = x[1, 50, 700]  # runs of equal values
    assert np.array_equal(median_filter(x, 7), reference_median_filter(x, 7))


def test_width_seven_of_a_strided_view_equals_the_numpy_oracle() -> None:
    x = np.random.default_rng(8).normal(size=(40, 2, 300))[:, 1, ::2]  # not contiguous
    assert np.array_equal(median_filter(x, 7), reference_median_filter(x, 7))
