"""Time the anti-diagonal (vectorised) DTW against a naive Python double loop on a 448 × 1500 matrix.

Run: ``.venv/bin/python -m benchmarks.dtw_speed`` (about 10 s). A script, not a test: prints the times and checks
that the vectorised and the naive paths cost the same. Wall-clock times: run it on an idle machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from adapters.dtw.path import dtw_path

TOKENS, FRAMES = 448, 1500  # twice whisper's 224-token context × the 30-s window's 1500 frames
REPEATS = 5  # best of, for the vectorised version
NAIVE_REPEATS = 3


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
