"""An MLX array read by the host, at the bus's speed on MLX's CUDA backend.

On CUDA, MLX computes into device memory; when the host reads an array, MLX copies it into fresh managed memory
(``copy_to_managed`` in its allocator), where it lies on the GPU, and numpy's read then migrates it page by page
as it faults: ~0.6-0.8 GB/s on an H200's host (``docs/performance.md`` #68). ``host_array`` asks the CUDA driver to
move the whole range to the host first (``cuMemPrefetchAsync``), then copies it. Where the driver cannot be asked
(no CUDA, another backend, a driver without the call) it is numpy's plain copy, which is as correct, and slower.
"""

from __future__ import annotations

import ctypes
from functools import cache

import mlx.core as mx
import numpy as np
from numpy.typing import NDArray

CU_DEVICE_CPU = -1  # the driver's name for the host as a prefetch's destination (the call's first version)
CU_MEM_LOCATION_TYPE_HOST = 2  # the same for the call's second version (CUmemLocation)


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _Driver:
    """The few CUDA driver calls a prefetch to the host needs, through ctypes."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.v2 = hasattr(lib, "cuMemPrefetchAsync_v2")
        context = ctypes.c_void_p()
        # MLX's runtime calls use the device's primary context: make it current on a thread that has none
        if lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0) != 0:
            raise OSError("no primary CUDA context")
        self.context = context

    def prefetch_to_host(self, address: int, size: int) -> bool:
        current = ctypes.c_void_p()
        if self.lib.cuCtxGetCurrent(ctypes.byref(current)) != 0:
            return False
        if not current.value and self.lib.cuCtxSetCurrent(self.context) != 0:
            return False
        pointer, count, stream = ctypes.c_uint64(address), ctypes.c_size_t(size), ctypes.c_void_p(0)
        if self.v2:
            where = _Location(CU_MEM_LOCATION_TYPE_HOST, 0)
            status = self.lib.cuMemPrefetchAsync_v2(pointer, count, where, ctypes.c_uint(0), stream)
        else:
            status = self.lib.cuMemPrefetchAsync(pointer, count, ctypes.c_int(CU_DEVICE_CPU), stream)
        return bool(status == 0 and self.lib.cuStreamSynchronize(stream) == 0)


@cache
def _driver() -> _Driver | None:
    if not mx.cuda.is_available():
        return None
    try:
        return _Driver(ctypes.CDLL("libcuda.so.1"))
    except (OSError, AttributeError):
        return None


def host_array(array: mx.array) -> NDArray[np.generic]:
    """``np.array(array)``, with the data moved to the host in one piece first where MLX runs on CUDA."""
    driver = _driver()
    if driver is None:
        return np.array(array)
    view = np.asarray(array)  # a view: evaluates it, and MLX copies it into managed memory
    if view.nbytes:
        driver.prefetch_to_host(view.ctypes.data, view.nbytes)  # if refused, the copy below faults its pages in
    return view.copy()
