"""DTW of a batch of alignment matrices as one CUDA kernel (MLX's CUDA backend): ``alignment.DtwFirstFrames``.

As MLX ops the wavefront is a dozen graph nodes an anti-diagonal, ~1600 anti-diagonals at a window's 1500 frames,
and the backtrack as many again: tens of thousands of nodes that MLX launches one by one. Here one block a sequence
does all of it: the threads take the cells of an anti-diagonal (a thread per row), the accumulated costs of the last
three anti-diagonals stay in shared memory, each cell's move (0 diagonal, 1 up, 2 left: the first of the cheapest,
as ``adapters/dtw/path.py`` breaks ties) goes to global memory, and a barrier separates anti-diagonals; then one
thread walks back from the sequence's last cell and writes where the path first reaches each row. The moves are a
second output, scratch (a byte a cell).

``SOURCE`` is the kernel's body exactly as MLX compiles it; ``tests/integration/test_device_alignment.py`` also
compiles and runs it on the CPU (threads and a barrier standing in for a block), so that its logic is tested
without a GPU.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import mlx.core as mx

THREADS = 256  # a block's threads: rows beyond this many take a second turn an anti-diagonal
MAX_ROWS = 511  # rows a sequence may have (the totals of three anti-diagonals in shared memory); whisper's are <= 449

INPUT_NAMES = ("cost", "sizes")
OUTPUT_NAMES = ("first", "moves")

SOURCE = """
    // no header of MLX's kernel JIT defines an infinity (the first H100 run: "identifier inf is undefined"); the
    // intrinsic needs none
    const float inf = __int_as_float(0x7f800000);
    __shared__ float totals[3][MAX_ROWS + 1];  // three anti-diagonals: [d % 3][i] is cell (i, d - i), 1-based
    const int b = blockIdx.x, tid = threadIdx.x;
    const int R = cost_shape[1], F = cost_shape[2];
    const int rows = sizes[2 * b], cols = sizes[2 * b + 1];
    const float* c = cost + (size_t)b * R * F;
    uint8_t* mv = moves + (size_t)b * R * F;
    int* out = first + (size_t)b * R;
    for (int i = tid; i <= rows; i += THREADS) {
        totals[0][i] = i == 0 ? 0.0f : inf;  // anti-diagonal 0: only the corner before the first cell
        totals[1][i] = inf;
    }
    __syncthreads();
    for (int d = 2; d <= rows + cols; ++d) {
        float* now = totals[d % 3];
        const float* last = totals[(d - 1) % 3];
        const float* before = totals[(d - 2) % 3];
        for (int i = tid; i <= rows; i += THREADS) {
            const int j = d - i;
            float total = inf;
            if (i >= 1 && j >= 1 && j <= cols) {
                const float diagonal = before[i - 1], up = last[i - 1], left = last[i];
                uint8_t move = 2;
                float best = left;
                if (diagonal <= up && diagonal <= left) {
                    move = 0;
                    best = diagonal;
                } else if (up <= left) {
                    move = 1;
                    best = up;
                }
                const size_t cell = (size_t)(i - 1) * F + (j - 1);
                total = c[cell] + best;
                mv[cell] = move;
            }
            now[i] = total;
        }
        __syncthreads();  // the anti-diagonal is whole before the next reads it (and its buffer's last reader is done)
    }
    for (int i = rows + tid; i < R; i += THREADS) out[i] = 0;
    if (tid == 0) {  // the moves of every thread are visible after the barrier above
        int i = rows, j = cols;
        while (true) {
            out[i - 1] = j - 1;  // going back the frames only fall: the last written is the row's first
            if (i == 1 && j == 1) break;
            if (i == 1) {
                --j;
            } else if (j == 1) {
                --i;
            } else {
                const uint8_t move = mv[(size_t)(i - 1) * F + (j - 1)];
                if (move != 2) --i;
                if (move != 1) --j;
            }
        }
    }
"""


@cache
def _kernel() -> Any:
    return mx.fast.cuda_kernel(
        name="onepass_dtw", input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), source=SOURCE
    )


def dtw_first_frames(cost: mx.array, sizes: mx.array) -> mx.array:
    """``alignment.dtw_first_frames`` as one kernel: ``cost`` batch × rows × frames (float32, minimised), ``sizes``
    batch × 2 (each sequence's rows and frames, at least 1 each); returns batch × rows int32."""
    batch, rows, frames = cost.shape
    if rows > MAX_ROWS:
        raise ValueError(f"the DTW kernel takes at most {MAX_ROWS} rows, got {rows}")
    outputs = _kernel()(
        inputs=[cost.astype(mx.float32), sizes.astype(mx.int32)],
        template=[("THREADS", THREADS), ("MAX_ROWS", MAX_ROWS)],
        grid=(batch * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(batch, rows), (batch, rows, frames)],
        output_dtypes=[mx.int32, mx.uint8],
    )
    result: mx.array = outputs[0]
    return result
