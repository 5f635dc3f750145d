"""Word timing's costs: the aligner before and after issue #7's rework, and DTW against naive loops.

Run: ``.venv/bin/python -m benchmarks.dtw_speed`` (about 20 s). A script, not a test. Wall-clock times, best of
several runs: run it on an idle machine.

1. ``DtwAligner.align`` of one window at large-v3's (10 alignment heads) and tiny.en's (8) shapes, 100 tokens ×
   1500 frames, with refinement: the previous implementation (``previous_attention_matrix``: whole-array softmax
   and z-score, the full 7-input sorting network on whole lanes) beside the current one (head by head, the pruned
   network on cache-sized blocks of rows), part by part, and whether both give the same matrix.
2. The anti-diagonal (vectorised) DTW against a naive Python double loop on a 448 × 1500 matrix; checks that the
   vectorised and the naive paths cost the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw import aligner as aligner_module
from onepass_whisper.adapters.dtw.aligner import DtwAligner, attention_matrix
from onepass_whisper.adapters.dtw.filters import median_filter
from onepass_whisper.adapters.dtw.path import dtw_path
from onepass_whisper.domain.audio import ChunkSegment, DecodedChunk, Window

TOKENS, FRAMES = 448, 1500  # twice whisper's 224-token context × the 30-s window's 1500 frames
REPEATS = 5  # best of, for the vectorised version
NAIVE_REPEATS = 3
ALIGN_TOKENS = 100  # text tokens of a window at the GPU benchmark's shapes (``benchmarks/gpu.py --tokens``)
ALIGN_REPEATS = 7
MODEL_HEADS = {"large-v3": 10, "tiny.en": 8}  # alignment heads (openai-whisper's tables)

# The previous 7-input median: the full sorting network on whole lanes, each lane a contiguous copy (commit 73dbdf0).
_NETWORK_7 = (
    (0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5),
    (3, 4), (1, 2), (4, 6), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6),
)  # fmt: skip


def previous_median_filter_7(x: NDArray[np.float32]) -> NDArray[np.float32]:
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(3, 3)], mode="reflect")
    n = padded.shape[-1] - 6
    lanes = [np.array(padded[..., i : i + n]) for i in range(7)]
    spare = np.empty_like(lanes[0])
    for i, j in _NETWORK_7:
        np.minimum(lanes[i], lanes[j], out=spare)
        np.maximum(lanes[i], lanes[j], out=lanes[j])
        lanes[i], spare = spare, lanes[i]
    return lanes[3]


def previous_zscores(attention: NDArray[np.floating]) -> NDArray[np.float32]:
    with np.errstate(over="ignore", invalid="ignore"):
        weights = np.nan_to_num(attention.astype(np.float32), nan=0.0)
        weights = weights - weights.max(axis=-1, keepdims=True)
        np.exp(weights, out=weights)
        weights /= weights.sum(axis=-1, keepdims=True)
        mean = weights.mean(axis=-2, keepdims=True)
        std = weights.std(axis=-2, keepdims=True)
        return np.asarray((weights - mean) / np.where(std > 0.0, std, np.float32(1.0)), dtype=np.float32)


def previous_attention_matrix(attention: NDArray[np.floating], median_width: int = 7) -> NDArray[np.float32]:
    assert median_width == 7
    return np.asarray(previous_median_filter_7(previous_zscores(attention)).mean(axis=0), dtype=np.float32)


def window_chunk(heads: int, tokens: int = ALIGN_TOKENS, frames: int = 1500) -> DecodedChunk:
    """One 30-s window of noise with a quiet 200 ms each second (pauses for the refinement), random attention."""
    rng = np.random.default_rng(heads)
    samples = (0.1 * rng.standard_normal(frames * 320)).astype(np.float32)
    for start in range(0, len(samples), 16_000):
        samples[start : start + 3_200] *= 1e-3
    words = tuple(f" w{i}" for i in range(tokens))
    return DecodedChunk(
        window=Window(source=0, index=0, offset=0.0, samples=samples),
        language="en",
        segments=[ChunkSegment(0.0, frames * 0.02, "".join(words), words, (1,) * tokens)],
        token_probabilities=np.full(tokens, 0.9, dtype=np.float32),
        attention=(3.0 * rng.standard_normal((heads, tokens + 1, frames))).astype(np.float32),
    )


def aligner_rows(heads: int) -> list[tuple[str, float, float]]:
    """(part, previous ms, current ms) for one window."""
    chunk = window_chunk(heads)
    attention = chunk.attention
    aligner = DtwAligner(lag_seconds=0.05)
    matrix = attention_matrix(attention)
    zscores = previous_zscores(attention)

    def align_previous() -> object:
        current = aligner_module.attention_matrix
        aligner_module.attention_matrix = previous_attention_matrix
        try:
            return aligner.align(chunk)
        finally:
            aligner_module.attention_matrix = current

    pairs = [
        ("DtwAligner.align (refine on)", align_previous, lambda: aligner.align(chunk)),
        ("attention_matrix", lambda: previous_attention_matrix(attention), lambda: attention_matrix(attention)),
        (
            "median filter, width 7, all heads",
            lambda: previous_median_filter_7(zscores),
            lambda: median_filter(zscores, 7),
        ),
        ("dtw_path (unchanged)", lambda: dtw_path(-matrix), lambda: dtw_path(-matrix)),
    ]
    rows = []
    for _ in range(2):  # alternating, twice: the machine's noise hits both columns alike
        for label, before, after in pairs:
            rows.append((label, best_time(before, ALIGN_REPEATS), best_time(after, ALIGN_REPEATS)))
    best: dict[str, tuple[float, float]] = {}
    for label, before_s, after_s in rows:
        old = best.get(label, (math.inf, math.inf))
        best[label] = (min(old[0], before_s), min(old[1], after_s))
    return [(label, *times) for label, times in best.items()]


def print_aligner() -> None:
    for model, heads in MODEL_HEADS.items():
        chunk = window_chunk(heads)
        same = np.array_equal(previous_attention_matrix(chunk.attention), attention_matrix(chunk.attention))
        print(
            f"{model} shapes: {heads} heads × {ALIGN_TOKENS + 1} rows × 1500 frames, one window (best of "
            f"{ALIGN_REPEATS} × 2, wall clock); same matrix before and after: {same}"
        )
        print(f"  {'':<38} {'before ms':>10} {'after ms':>10} {'speed-up':>9}")
        for label, before, after in aligner_rows(heads):
            print(f"  {label:<38} {before * 1e3:10.1f} {after * 1e3:10.1f} {before / after:8.2f}×")


def naive_dtw_path(cost: NDArray[np.float64]) -> tuple[list[int], list[int]]:
    """The textbook recurrence, one Python step per cell (lists, not numpy scalars: the fastest plain loop)."""
    rows, cols = cost.shape
    x = cost.tolist()
    total = [[math.inf] * (cols + 1) for _ in range(rows + 1)]
    trace = [[2] * (cols + 1) for _ in range(rows + 1)]
    total[0][0] = 0.0
    for i in range(1, rows + 1):
        above, here, row_trace, costs = total[i - 1], total[i], trace[i], x[i - 1]
        for j in range(1, cols + 1):
            best, step = above[j - 1], 0  # first minimum among diagonal, up, left
            if above[j] < best:
                best, step = above[j], 1
            if here[j - 1] < best:
                best, step = here[j - 1], 2
            here[j] = costs[j - 1] + best
            row_trace[j] = step
    i, j = rows, cols
    path_rows, path_cols = [i - 1], [j - 1]
    while i > 1 or j > 1:
        step = 2 if i == 1 else 1 if j == 1 else trace[i][j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
        path_rows.append(i - 1)
        path_cols.append(j - 1)
    return path_rows[::-1], path_cols[::-1]


def numpy_loop_dtw_cost(cost: NDArray[np.float64]) -> float:
    """whisper's ``dtw_cpu`` loop without numba: numpy scalars indexed cell by cell (cost only, no backtrack)."""
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf)
    total[0, 0] = 0.0
    for j in range(1, cols + 1):
        for i in range(1, rows + 1):
            total[i, j] = cost[i - 1, j - 1] + min(total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
    return float(total[rows, cols])


def best_time(function: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        timings.append(time.perf_counter() - began)
    return min(timings)


def main() -> None:
    print_aligner()
    cost = -np.random.default_rng(0).normal(size=(TOKENS, FRAMES))
    rows, cols = dtw_path(cost)
    naive_rows, naive_cols = naive_dtw_path(cost)
    same = math.isclose(float(cost[rows, cols].sum()), float(cost[naive_rows, naive_cols].sum()), rel_tol=1e-9)
    vectorised = best_time(lambda: dtw_path(cost), REPEATS)
    naive = best_time(lambda: naive_dtw_path(cost), NAIVE_REPEATS)
    numpy_loop = best_time(lambda: numpy_loop_dtw_cost(cost), 1)
    print(f"DTW on {TOKENS} × {FRAMES} (best of {REPEATS} / {NAIVE_REPEATS} / 1 runs, wall clock):")
    rows_out = [
        ("vectorised (anti-diagonals, numpy)", vectorised),
        ("naive Python double loop (lists)", naive),
        ("double loop on numpy scalars (dtw_cpu without numba)", numpy_loop),
    ]
    for label, seconds in rows_out:
        print(f"  {label:<54} {seconds * 1e3:8.1f} ms  ({seconds / vectorised:4.0f}×)")
    print(f"  same path cost as the naive loop: {same}")


if __name__ == "__main__":
    main()
