"""Properties of ``dtw_path``: a monotone path across the whole matrix whose cost is the optimum."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.path import dtw_path
from tests.strategies import cost_matrices

STEPS = {(1, 0), (0, 1), (1, 1)}


def reference_dtw_cost(cost: NDArray[np.float64]) -> float:
    """The optimum by the textbook O(N × M) recurrence, one Python step per cell."""
    rows, cols = cost.shape
    total = [[math.inf] * (cols + 1) for _ in range(rows + 1)]
    total[0][0] = 0.0
    for i, j in itertools.product(range(1, rows + 1), range(1, cols + 1)):
        total[i][j] = float(cost[i - 1, j - 1]) + min(total[i - 1][j - 1], total[i - 1][j], total[i][j - 1])
    return total[rows][cols]


def all_paths(rows: int, cols: int) -> Iterator[list[tuple[int, int]]]:
    """Every monotone path from (0, 0) to (rows - 1, cols - 1): brute force for small matrices."""

    def extend(path: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
        i, j = path[-1]
        if (i, j) == (rows - 1, cols - 1):
            yield path
            return
        for di, dj in STEPS:
            if i + di < rows and j + dj < cols:
                yield from extend([*path, (i + di, j + dj)])

    yield from extend([(0, 0)])


def path_cost(cost: NDArray[np.float64], rows: NDArray[np.intp], cols: NDArray[np.intp]) -> float:
    return float(cost[rows, cols].sum())


def close(a: float, b: float, cost: NDArray[np.float64]) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * (float(np.abs(cost).sum()) + 1.0))


@given(cost=cost_matrices())
def test_dtw_path_is_monotone_and_spans_matrix(cost: NDArray[np.float64]) -> None:
    rows, cols = dtw_path(cost)
    steps = set(zip(np.diff(rows).tolist(), np.diff(cols).tolist(), strict=True))
    assert (rows[0], cols[0], rows[-1], cols[-1]) == (0, 0, *np.subtract(cost.shape, 1))
    assert steps <= STEPS


@given(cost=cost_matrices())
def test_dtw_path_cost_is_the_oracles(cost: NDArray[np.float64]) -> None:
    rows, cols = dtw_path(cost)
    assert close(path_cost(cost, rows, cols), reference_dtw_cost(cost), cost)


@given(cost=cost_matrices(max_side=5))
def test_dtw_path_cost_is_the_brute_force_minimum(cost: NDArray[np.float64]) -> None:
    rows, cols = dtw_path(cost)
    best = min(sum(float(cost[i, j]) for i, j in path) for path in all_paths(*cost.shape))
    assert close(path_cost(cost, rows, cols), best, cost)


@st.composite
def planted_paths(draw: st.DrawFn) -> tuple[NDArray[np.float64], list[tuple[int, int]]]:
    """A matrix of costs in [1, 2] with a random monotone path of -1s from corner to corner."""
    rows, cols = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    path = [(0, 0)]
    while path[-1] != (rows - 1, cols - 1):
        i, j = path[-1]
        options = [(i + di, j + dj) for di, dj in sorted(STEPS) if i + di < rows and j + dj < cols]
        path.append(draw(st.sampled_from(options)))
    seed = draw(st.integers(0, 2**32 - 1))
    cost = np.random.default_rng(seed).uniform(1.0, 2.0, size=(rows, cols))
    cost[tuple(np.array(path).T)] = -1.0
    return cost, path


@given(planted=planted_paths())
def test_dtw_path_recovers_a_planted_cheap_path(planted: tuple[NDArray[np.float64], list[tuple[int, int]]]) -> None:
    cost, path = planted
    rows, cols = dtw_path(cost)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == path


def test_ties_take_the_cheaper_diagonal_step() -> None:
    # whisper's dtw_cpu returns cost 4 here (a diagonal/up tie sent left)
    rows, cols = dtw_path(np.ones((3, 2)))
    assert path_cost(np.ones((3, 2)), rows, cols) == 3.0


def test_dtw_path_handles_single_rows_and_columns() -> None:
    rows, cols = dtw_path(np.zeros((1, 4)))
    assert (rows.tolist(), cols.tolist()) == ([0, 0, 0, 0], [0, 1, 2, 3])
    rows, cols = dtw_path(np.zeros((3, 1)))
    assert (rows.tolist(), cols.tolist()) == ([0, 1, 2], [0, 0, 0])


def test_dtw_path_survives_overflow_to_infinity() -> None:
    rows, cols = dtw_path(np.full((4, 6), 1e308))
    assert (rows[0], cols[0], rows[-1], cols[-1]) == (0, 0, 3, 5)
    assert set(zip(np.diff(rows).tolist(), np.diff(cols).tolist(), strict=True)) <= STEPS
