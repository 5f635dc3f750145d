"""The device alignment stage (``adapters/mlx/alignment.py``, ``cuda_dtw.py``) against the host aligner's numpy.

The MLX-op DTW and reduction run on any backend (the CPU's here); the CUDA kernel's source runs here too, compiled
by the host's C++ compiler with threads and a barrier standing in for a block, and on MLX's CUDA backend where
there is one (``test_cuda_kernel_*``: skipped elsewhere).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw import attention_matrix, dtw_path, median_filter, token_frames
from onepass_whisper.adapters.mlx import alignment, cuda_dtw

CUDA = mx.cuda.is_available()
ON_CPU = mx.default_device() == mx.cpu
# the reduction's float32 sums go in another order than numpy's, and the z-score divides their rounding by the rows'
# spread; on the CPU backend these cases agree closer than elsewhere (a GPU's exp, its reductions' order)
REDUCTION_ATOL = 2e-5 if ON_CPU else 5e-4
# a near-tie in DTW may then go the other way: exactly the host's frames on the CPU backend here, within one elsewhere
FRAME_SLACK = 0 if ON_CPU else 1


def host_first_frames(cost: NDArray[np.floating]) -> NDArray[np.intp]:
    """``path.py``'s DTW, and the frame where its path first reaches each row (as ``DtwAligner``)."""
    path_rows, path_frames = dtw_path(cost)
    first: NDArray[np.intp] = path_frames[np.diff(path_rows, prepend=-1).astype(bool)]
    return first


@st.composite
def cost_batches(
    draw: st.DrawFn, max_side: int = 12, levels: int = 3
) -> tuple[NDArray[np.float32], list[tuple[int, int]]]:
    """A batch of 1-4 integer cost matrices (few levels: many ties) of their own sizes, padded with junk."""
    sizes = draw(st.lists(st.tuples(st.integers(1, max_side), st.integers(1, max_side)), min_size=1, max_size=4))
    rows, frames = max(r for r, _ in sizes), max(f for _, f in sizes)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    batch = rng.integers(-9, 9, size=(len(sizes), rows, frames)).astype(np.float32)  # junk outside the corners
    for n, (r, f) in enumerate(sizes):
        batch[n, :r, :f] = rng.integers(0, levels, size=(r, f))
    return batch, sizes


def device_first_frames(
    cost: NDArray[np.float32], sizes: list[tuple[int, int]], dtw: alignment.DtwFirstFrames
) -> NDArray[np.int32]:
    return np.array(dtw(mx.array(cost), mx.array(np.array(sizes, np.int32))))


@given(case=cost_batches())
def test_mlx_dtw_gives_the_hosts_first_frames_ties_included(
    case: tuple[NDArray[np.float32], list[tuple[int, int]]],
) -> None:
    cost, sizes = case
    got = device_first_frames(cost, sizes, alignment.dtw_first_frames)
    for n, (r, f) in enumerate(sizes):
        assert got[n, :r].tolist() == host_first_frames(cost[n, :r, :f]).tolist()
        assert not got[n, r:].any()


def test_mlx_dtw_on_random_floats_matches_the_host() -> None:
    rng = np.random.default_rng(0)
    sizes = [(40, 300), (7, 290), (1, 17), (33, 5)]
    cost = rng.standard_normal((4, 40, 300)).astype(np.float32)
    got = device_first_frames(cost, sizes, alignment.dtw_first_frames)
    for n, (r, f) in enumerate(sizes):
        assert got[n, :r].tolist() == host_first_frames(cost[n, :r, :f]).tolist()


@given(
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=3),
    width=st.sampled_from([1, 3, 5, 7, 9, 15]),
    seed=st.integers(0, 2**32 - 1),
)
def test_median_filter_matches_the_hosts(lengths: list[int], width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=(len(lengths), 2, max(lengths))).astype(np.float32)
    got = np.array(alignment.median_filter(mx.array(x), mx.array(lengths), width))
    for n, length in enumerate(lengths):
        np.testing.assert_array_equal(got[n, :, :length], median_filter(x[n, :, :length], width))


def random_attention(rng: np.random.Generator, heads: int, rows: int, frames: int) -> NDArray[np.float32]:
    """Raw QK with a diagonal ridge (as real attention has), scaled as large-v3's scores are."""
    ridge = -0.02 * (np.arange(frames)[None, :] - np.linspace(0, frames - 1, rows)[:, None]) ** 2
    return (4.0 * rng.standard_normal((heads, rows, frames)) + ridge).astype(np.float32)


@given(
    sizes=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 90)), min_size=1, max_size=4),
    width=st.sampled_from([1, 3, 5, 7, 9]),
    seed=st.integers(0, 2**32 - 1),
    extremes=st.booleans(),
)
def test_batched_reduction_matches_the_hosts(
    sizes: list[tuple[int, int]], width: int, seed: int, extremes: bool
) -> None:
    rng = np.random.default_rng(seed)
    rows, frames = max(r for r, _ in sizes), max(f for _, f in sizes)
    attention = rng.standard_normal((len(sizes), 3, rows, frames)).astype(np.float32)  # junk outside the corners
    for n, (r, f) in enumerate(sizes):
        attention[n, :, :r, :f] = random_attention(rng, 3, r, f)
        if extremes:  # the host's rule: infinities become the extreme finite values, NaN 0
            attention[n, rng.integers(3), rng.integers(r), rng.integers(f)] = rng.choice([np.inf, -np.inf, np.nan])
    matrices = alignment.attention_matrices(mx.array(attention), mx.array(np.array(sizes, np.int32)), width)
    got = np.array(matrices)
    for n, (r, f) in enumerate(sizes):
        expected = attention_matrix(attention[n, :, :r, :f], width)
        np.testing.assert_allclose(got[n, :r, :f], expected, atol=REDUCTION_ATOL)
        assert not got[n, r:].any() and not got[n, :, f:].any()


def captured_rows(rng: np.random.Generator, steps: int, batch: int, heads: int, frames: int) -> NDArray[np.float32]:
    """steps × batch × heads × frames, as the lagged loop keeps them on the device."""
    rows = np.stack([random_attention(rng, heads, steps, frames) for _ in range(batch)])  # batch × heads × steps × F
    return np.ascontiguousarray(rows.transpose(2, 0, 1, 3))


def test_token_frames_of_a_batch_are_the_host_aligners() -> None:
    rng = np.random.default_rng(2)
    rows = captured_rows(rng, steps=30, batch=3, heads=4, frames=200)
    sequences = [
        alignment.AlignedRows(batch_index=2, steps=(0, 1, 2, 5, 6, 29), frames=200),
        alignment.AlignedRows(batch_index=0, steps=tuple(range(20)), frames=137),
        alignment.AlignedRows(batch_index=1, steps=(3,), frames=50),  # only end-of-text's row
        alignment.AlignedRows(batch_index=1, steps=(0, 1), frames=0),  # no frames: every time 0
    ]
    got = alignment.token_frames(mx.array(rows).astype(mx.float16), sequences, 7)
    for sequence, frames in zip(sequences, got, strict=True):
        host = rows.astype(np.float16).astype(np.float32)[list(sequence.steps), sequence.batch_index]
        expected = token_frames(host.transpose(1, 0, 2)[:, :, : sequence.frames], 7)
        assert np.abs(frames.astype(int) - expected).max() <= FRAME_SLACK


# -- the CUDA kernel's source on the CPU: a block's threads as std::threads, __syncthreads as a barrier ----------

_HARNESS = r"""
#include <barrier>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>
struct Dim3 { int x = 0, y = 0, z = 0; };
static thread_local Dim3 threadIdx, blockIdx;
static std::barrier<>* block_barrier;
#define __syncthreads() block_barrier->arrive_and_wait()
#define __shared__ static
static inline float __int_as_float(int bits) { return std::bit_cast<float>(bits); }  // CUDA's intrinsic
struct Shape { const int64_t* v; int64_t operator[](int i) const { return v[i]; } };
constexpr int THREADS = @THREADS@;
constexpr int MAX_ROWS = @MAX_ROWS@;
static void kernel(const float* cost, const Shape cost_shape, const int32_t* sizes, int32_t* first, uint8_t* moves) {
@SOURCE@
}
extern "C" void run(const float* cost, const int64_t* shape, const int32_t* sizes, int32_t* first, uint8_t* moves) {
    for (int b = 0; b < shape[0]; ++b) {
        std::barrier<> barrier(THREADS);
        block_barrier = &barrier;
        std::vector<std::thread> threads;
        for (int t = 0; t < THREADS; ++t)
            threads.emplace_back([=] { threadIdx.x = t; blockIdx.x = b; kernel(cost, Shape{shape}, sizes, first, moves); });
        for (auto& thread : threads) thread.join();
    }
}
"""


@pytest.fixture(scope="module", params=[8, cuda_dtw.THREADS], ids=lambda t: f"{t}-threads")
def kernel_on_cpu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> alignment.DtwFirstFrames:
    """``cuda_dtw.SOURCE`` compiled for the CPU; 8 threads a block make rows past the threads take turns."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to run the CUDA kernel's source on the CPU")
    threads = int(request.param)
    folder = tmp_path_factory.mktemp(f"dtw-{threads}")
    source = _HARNESS.replace("@THREADS@", str(threads)).replace("@MAX_ROWS@", str(cuda_dtw.MAX_ROWS))
    (folder / "dtw.cpp").write_text(source.replace("@SOURCE@", cuda_dtw.SOURCE), encoding="utf-8")
    library = folder / "dtw.so"
    # no -Werror: the harness runs the kernel's logic, and another g++ (the GPU machine's) warns of other things
    command = [compiler, "-std=c++20", "-O1", "-Wall", "-shared", "-fPIC", "-pthread"]
    subprocess.run([*command, str(folder / "dtw.cpp"), "-o", str(library)], check=True)
    run = ctypes.CDLL(str(library)).run

    def first_frames(cost: mx.array, sizes: mx.array) -> mx.array:
        host_cost = np.ascontiguousarray(np.array(cost), np.float32)
        host_sizes = np.ascontiguousarray(np.array(sizes), np.int32)
        shape = np.array(host_cost.shape, np.int64)
        first = np.full(host_cost.shape[:2], -1, np.int32)  # garbage, as a fresh output is
        moves = np.full(host_cost.shape, 7, np.uint8)
        run(*(a.ctypes.data_as(ctypes.c_void_p) for a in (host_cost, shape, host_sizes, first, moves)))
        return mx.array(first)

    return first_frames


# the kernel as MLX's CUDA backend builds it (``mlx/backend/cuda/custom_kernel.cpp``: its default header, then the
# signature from the inputs, their shapes where the source names them, the outputs, and the template constants),
# with what it takes from MLX's device header spelled out (nothing more: the first H100 run found the source relying
# on an ``inf`` that only this test had defined)
_AS_MLX_BUILDS_IT = """
#include <cooperative_groups.h>
#include <cuda/std/array>
#include <cuda/std/limits>
#include <cstdint>
namespace mlx::core::cu {
using Shape = cuda::std::array<int32_t, 8>;
namespace cg = cooperative_groups;
__global__ void custom_kernel_onepass_dtw(
    const float* cost,
    const __grid_constant__ Shape cost_shape,
    const int32_t* sizes,
    int32_t* first,
    uint8_t* moves) {
  constexpr int THREADS = @THREADS@;
  constexpr int MAX_ROWS = @MAX_ROWS@;
@SOURCE@
}
}  // namespace mlx::core::cu
"""


def test_cuda_kernel_source_compiles_for_the_h100(tmp_path: Path) -> None:
    """What NVRTC would reject on the GPU machine, found here by nvcc (sm_90: H100 and H200)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc to compile the CUDA kernel's source")
    source = _AS_MLX_BUILDS_IT.replace("@THREADS@", str(cuda_dtw.THREADS))
    source = source.replace("@MAX_ROWS@", str(cuda_dtw.MAX_ROWS)).replace("@SOURCE@", cuda_dtw.SOURCE)
    (tmp_path / "dtw.cu").write_text(source, encoding="utf-8")
    command = [nvcc, "-arch=sm_90", "-std=c++17", "-Werror", "all-warnings", "-c", "dtw.cu", "-o", "dtw.o"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@settings(max_examples=25)
@given(case=cost_batches(max_side=20))
def test_cuda_kernel_source_on_the_cpu_gives_the_hosts_first_frames(
    kernel_on_cpu: alignment.DtwFirstFrames, case: tuple[NDArray[np.float32], list[tuple[int, int]]]
) -> None:
    cost, sizes = case
    got = device_first_frames(cost, sizes, kernel_on_cpu)
    for n, (r, f) in enumerate(sizes):
        assert got[n, :r].tolist() == host_first_frames(cost[n, :r, :f]).tolist()
        assert not got[n, r:].any()


def test_cuda_kernel_source_on_the_cpu_at_whisper_sizes(kernel_on_cpu: alignment.DtwFirstFrames) -> None:
    rng = np.random.default_rng(3)
    sizes = [(101, 1500), (300, 40), (1, 1500)]
    cost = rng.standard_normal((3, 300, 1500)).astype(np.float32)
    got = device_first_frames(cost, sizes, kernel_on_cpu)
    expected = device_first_frames(cost, sizes, alignment.dtw_first_frames)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not CUDA, reason="the DTW kernel is CUDA's (MLX's CUDA backend)")
@settings(max_examples=200)
@given(case=cost_batches(max_side=40))
def test_cuda_kernel_gives_the_hosts_first_frames(case: tuple[NDArray[np.float32], list[tuple[int, int]]]) -> None:
    cost, sizes = case
    got = device_first_frames(cost, sizes, cuda_dtw.dtw_first_frames)
    for n, (r, f) in enumerate(sizes):
        assert got[n, :r].tolist() == host_first_frames(cost[n, :r, :f]).tolist()
        assert not got[n, r:].any()


@pytest.mark.skipif(not CUDA, reason="the DTW kernel is CUDA's (MLX's CUDA backend)")
def test_cuda_kernel_at_whisper_sizes_matches_the_mlx_ops() -> None:
    rng = np.random.default_rng(4)
    sizes = [(101, 1500)] * 60 + [(449, 1500), (300, 40), (1, 1500), (7, 1)]
    cost = rng.standard_normal((len(sizes), 449, 1500)).astype(np.float32)
    got = device_first_frames(cost, sizes, cuda_dtw.dtw_first_frames)
    with mx.stream(mx.cpu):
        expected = device_first_frames(cost, sizes, alignment.dtw_first_frames)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not CUDA, reason="the DTW kernel is CUDA's (MLX's CUDA backend)")
def test_cuda_token_frames_of_a_batch_are_the_host_aligners() -> None:
    rng = np.random.default_rng(5)
    rows = captured_rows(rng, steps=101, batch=8, heads=10, frames=1500)
    sequences = [alignment.AlignedRows(n, tuple(range(101 - 7 * n)), 1500 - 100 * n) for n in range(8)]
    got = alignment.token_frames(mx.array(rows).astype(mx.float16), sequences, 7, cuda_dtw.dtw_first_frames)
    for sequence, frames in zip(sequences, got, strict=True):
        host = rows.astype(np.float16).astype(np.float32)[list(sequence.steps), sequence.batch_index]
        expected = token_frames(host.transpose(1, 0, 2)[:, :, : sequence.frames], 7)
        assert np.abs(frames.astype(int) - expected).max() <= 1  # float32 sums in another order: near-ties may differ
