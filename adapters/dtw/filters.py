"""The median filter that smooths the alignment heads' attention along time."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_Float = TypeVar("_Float", bound=np.floating)

# A sorting network for 7 inputs (16 compare-exchanges; Knuth, TAOCP vol. 3, 5.3.4): the middle output is the
# median. Whisper's filter width is 7; ``scipy.ndimage.median_filter`` takes ~110 ns per element for it here, the
# network, done with whole-array minimum/maximum, several times less, and numpy releases the GIL while it runs.
MEDIAN_NETWORK_WIDTH = 7
_NETWORK_7 = (
    (0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5),
    (3, 4), (1, 2), (4, 6), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6),
)  # fmt: skip


def _median_steps(network: tuple[tuple[int, int], ...], middle: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """``network``'s compare-exchanges that the ``middle`` output depends on: (lane i, lane j, whether the minimum
    (to i) and whether the maximum (to j) is used later). A backward liveness pass: 22 of the 32 operations remain."""
    live, steps = {middle}, []
    for i, j in reversed(network):
        low, high = i in live, j in live
        if low or high:
            steps.append((i, j, low, high))
            live |= {i, j}
    return tuple(reversed(steps))


_BLOCK_BYTES = 1 << 18  # one lane of a block of rows; the ~9 lanes alive at once fit a 2-MiB L2 cache

_MEDIAN_STEPS_7 = _median_steps(_NETWORK_7, MEDIAN_NETWORK_WIDTH // 2)
_SHARED_PAIRS = ((2, 3), (4, 5))  # the first layer's pairs of neighbours: one sorted-pairs array serves both
assert tuple(step[:2] for step in _MEDIAN_STEPS_7[1:3]) == _SHARED_PAIRS
_OTHER_STEPS_7 = _MEDIAN_STEPS_7[:1] + _MEDIAN_STEPS_7[3:]
# the compare-exchanges that the median of 7 lanes depends on, (i, j, minimum used, maximum used): the device's
# median filter (``adapters/mlx/alignment.py``) runs the same ones, so both give the same medians
MEDIAN_7_STEPS = _MEDIAN_STEPS_7


def median_filter(x: NDArray[_Float], width: int) -> NDArray[_Float]:
    """Median of ``width`` neighbours along the last axis of ``x`` (any number of dimensions), same shape and dtype.

    Edges are mirrored without repeating the edge sample: numpy's ``"reflect"``, scipy's ``"mirror"`` (scipy's own
    ``"reflect"`` is numpy's ``"symmetric"``). A width longer than the axis keeps mirroring, as ``np.pad`` does;
    openai-whisper returns such inputs unfiltered instead.
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median filter width must be a positive odd number, got {width}")
    if width == 1 or x.size == 0:
        result: NDArray[_Float] = x.copy()  # a typed name: numpy's stubs give Any here for Python 3.10
        return result
    half = width // 2
    if width == MEDIAN_NETWORK_WIDTH and x.shape[-1] > 0:
        return _median_7(x)
    # Pad here rather than rely on mode="mirror" at the edges: scipy 1.15-1.17's 1-D rank filter reads past the
    # array when half >= length (a 1-element input gives garbage such as 2.4e-322; scipy issues 22586, 23075).
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    filtered = ndimage.median_filter(padded, size=(1,) * (x.ndim - 1) + (width,), mode="mirror")
    return filtered[..., half:-half]


def _median_7(x: NDArray[_Float]) -> NDArray[_Float]:
    """``median_filter(x, 7)`` by the sorting network, a block of rows at a time: each step of the network reads
    and writes whole lanes, and lanes that stay in the core's cache make it ~2.5× faster than lanes of the whole
    array (10 heads × 101 tokens × 1500 frames on the 2-core CPU: 64 ms with the full network on whole lanes, 49
    with the pruned one, 21 in blocks; ``benchmarks/dtw_speed.py``)."""
    half = MEDIAN_NETWORK_WIDTH // 2
    rows = x.reshape(-1, x.shape[-1])  # (rows, frames): a copy only where x is not contiguous
    padded = np.pad(rows, ((0, 0), (half, half)), mode="reflect")
    out = np.empty_like(rows)
    block = max(1, _BLOCK_BYTES // (padded.shape[-1] * padded.itemsize))
    for start in range(0, len(rows), block):
        out[start : start + block] = _median_network(padded[start : start + block])
    return out.reshape(x.shape)


def _median_network(padded: NDArray[_Float]) -> NDArray[_Float]:
    """Median of each 7 consecutive values along the last axis of ``padded`` (already padded by 3 each side).

    Lane k of window t is ``padded[..., t + k]``. The network's first layer sorts the pairs (2, 3) and (4, 5): the
    sorted pairs of neighbours, computed once for the whole signal, give both (shifted by two). Every other step
    writes a new buffer (recycled from lanes no longer needed): lanes start as views, and overlapping views of one
    array must never be written in place. Only the steps the median depends on run (``_median_steps``).
    """
    n = padded.shape[-1] - (MEDIAN_NETWORK_WIDTH - 1)
    pair_low = np.minimum(padded[..., :-1], padded[..., 1:])  # [t] = min(padded[t], padded[t + 1])
    pair_high = np.maximum(padded[..., :-1], padded[..., 1:])
    lanes: list[NDArray[_Float] | None] = [padded[..., k : k + n] for k in range(MEDIAN_NETWORK_WIDTH)]
    for i, j in _SHARED_PAIRS:
        lanes[i], lanes[j] = pair_low[..., i : i + n], pair_high[..., i : i + n]
    owned = [False] * MEDIAN_NETWORK_WIDTH  # whether a lane is a buffer of its own (else a view of another array)
    spare: list[NDArray[_Float]] = []
    for i, j, low, high in _OTHER_STEPS_7:
        a, b = lanes[i], lanes[j]
        assert a is not None and b is not None
        free = [lane for lane, mine in ((a, owned[i]), (b, owned[j])) if mine]  # writable once read
        if low:  # while the maximum still reads a and b, the minimum goes to another buffer
            out = free.pop() if not high and free else spare.pop() if spare else np.empty_like(a)
            lanes[i] = np.minimum(a, b, out=out)
        if high:
            lanes[j] = np.maximum(a, b, out=free.pop() if free else spare.pop() if spare else np.empty_like(a))
        spare += free
        owned[i], owned[j] = low, high
        if not low:
            lanes[i] = None
        if not high:
            lanes[j] = None
    median = lanes[MEDIAN_NETWORK_WIDTH // 2]
    assert median is not None
    return median
