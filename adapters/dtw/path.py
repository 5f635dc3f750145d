"""Dynamic time warping in pure numpy, vectorised over anti-diagonals."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def dtw_path(cost: NDArray[np.floating]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The cheapest monotone path through ``cost`` (rows × columns, finite) from its first cell to its last.

    Steps are (1, 0), (0, 1) or (1, 1). Returns the path's row and column indices, in order.

    Every cell of an anti-diagonal depends only on the two anti-diagonals before it, so each anti-diagonal is one
    vector operation (the skew trick of openai-whisper's Triton kernel): N + M numpy steps instead of N × M Python
    steps. Ties go to the first minimum in the order (diagonal, up, left); whisper's ``dtw_cpu`` sends a
    diagonal/up tie to a dearer left step (cost 4 instead of 3 on a 3 × 2 matrix of ones).
    """
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"dtw_path needs a non-empty matrix, got shape {cost.shape}")
    diagonals = rows + cols + 1
    skewed_cost = _skew(cost)  # anti-diagonal × row: [k, r] holds cost[r, k - r]
    # Accumulated cost of the 1-based cells, with an infinite border row 0 and column 0: [d, i] is cell (i, d - i).
    total = np.full((diagonals, rows + 1), np.inf)  # anti-diagonal × row
    total[0, 0] = 0.0
    best = np.empty(rows, dtype=np.float64)  # scratch
    with np.errstate(over="ignore"):  # huge finite costs may sum to ±inf; _backtrack still finds a path
        for d in range(2, diagonals):
            lo, hi = max(1, d - cols), min(rows, d - 1) + 1  # rows [lo, hi) of this anti-diagonal's cells
            out = best[: hi - lo]
            np.minimum(total[d - 1, lo - 1 : hi - 1], total[d - 1, lo:hi], out=out)  # up, left
            np.minimum(total[d - 2, lo - 1 : hi - 1], out, out=out)  # diagonal
            np.add(skewed_cost[d - 2, lo - 1 : hi - 1], out, out=total[d, lo:hi])
    return _backtrack(total, rows, cols)


def _skew(cost: NDArray[np.floating]) -> NDArray[np.float64]:
    """rows × cols -> (rows + cols - 1) × rows, [k, r] = cost[r, k - r]: each anti-diagonal becomes a row.

    Padding each row with rows + 1 cells and reading the flat buffer back with rows + cols per row shifts row r
    right by r cells, without fancy indexing (whisper's Triton DTW does the same).
    """
    rows, cols = cost.shape
    padded = np.pad(cost.astype(np.float64), ((0, 0), (0, rows + 1)), constant_values=np.inf)  # rows × (cols+rows+1)
    shifted = padded.ravel()[: rows * (cols + rows)].reshape(rows, cols + rows)  # row r starts at column r
    return np.ascontiguousarray(shifted[:, : cols + rows - 1].T)


def _backtrack(total: NDArray[np.float64], rows: int, cols: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Walk from the last cell to the first, each time to the first cheapest of (diagonal, up, left).

    ``total`` is the skewed accumulated cost. Returns 0-based row and column indices in path order.
    """
    i, j = rows, cols  # 1-based
    path_rows, path_cols = [i - 1], [j - 1]
    while i > 1 or j > 1:
        if i == 1:  # first row: only left steps stay inside (they would not if overflow made every total infinite)
            j -= 1
        elif j == 1:  # first column: only up steps
            i -= 1
        else:
            d = i + j
            diagonal, up, left = total[d - 2, i - 1], total[d - 1, i - 1], total[d - 1, i]
            if diagonal <= up and diagonal <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        path_rows.append(i - 1)
        path_cols.append(j - 1)
    return np.array(path_rows[::-1], dtype=np.intp), np.array(path_cols[::-1], dtype=np.intp)
