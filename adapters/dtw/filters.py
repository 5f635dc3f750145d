"""The median filter that smooths the alignment heads' attention along time."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_Float = TypeVar("_Float", bound=np.floating)

# A sorting network for 7 inputs (16 compare-exchanges; Knuth, TAOCP vol. 3, 5.3.4): the middle output is the
# median. Whisper's filter width is 7; ``scipy.ndimage.median_filter`` takes ~110 ns per element for it here, the
# network, done with whole-array minimum/maximum, about 3x less, and numpy releases the GIL while it runs.
MEDIAN_NETWORK_WIDTH = 7
_NETWORK_7 = (
    (0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5),
    (3, 4), (1, 2), (4, 6), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6),
)  # fmt: skip


def median_filter(x: NDArray[_Float], width: int) -> NDArray[_Float]:
    """Median of ``width`` neighbours along the last axis of ``x`` (any number of dimensions), same shape and dtype.

    Edges are mirrored without repeating the edge sample: numpy's ``"reflect"``, scipy's ``"mirror"`` (scipy's own
    ``"reflect"`` is numpy's ``"symmetric"``). A width longer than the axis keeps mirroring, as ``np.pad`` does;
    openai-whisper returns such inputs unfiltered instead.
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median filter width must be a positive odd number, got {width}")
    if width == 1 or x.size == 0:
        return x.copy()
    half = width // 2
    if width == MEDIAN_NETWORK_WIDTH and x.shape[-1] > 0:
        return _median_network(np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect"))
    # Pad here rather than rely on mode="mirror" at the edges: scipy 1.15-1.17's 1-D rank filter reads past the
    # array when half >= length (a 1-element input gives garbage such as 2.4e-322; scipy issues 22586, 23075).
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    filtered = ndimage.median_filter(padded, size=(1,) * (x.ndim - 1) + (width,), mode="mirror")
    return filtered[..., half:-half]


def _median_network(padded: NDArray[_Float]) -> NDArray[_Float]:
    """Median of each 7 consecutive values along the last axis of ``padded`` (already padded by 3 each side)."""
    n = padded.shape[-1] - (MEDIAN_NETWORK_WIDTH - 1)
    lanes = [np.array(padded[..., i : i + n]) for i in range(MEDIAN_NETWORK_WIDTH)]  # contiguous copies
    spare = np.empty_like(lanes[0])
    for i, j in _NETWORK_7:
        np.minimum(lanes[i], lanes[j], out=spare)
        np.maximum(lanes[i], lanes[j], out=lanes[j])
        lanes[i], spare = spare, lanes[i]
    return lanes[MEDIAN_NETWORK_WIDTH // 2]
