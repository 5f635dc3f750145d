"""The median filter that smooths the alignment heads' attention along time."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_Float = TypeVar("_Float", bound=np.floating)


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
    # Pad here rather than rely on mode="mirror" at the edges: scipy 1.15-1.17's 1-D rank filter reads past the
    # array when half >= length (a 1-element input gives garbage such as 2.4e-322; scipy issues 22586, 23075).
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    filtered = ndimage.median_filter(padded, size=(1,) * (x.ndim - 1) + (width,), mode="mirror")
    return filtered[..., half:-half]
