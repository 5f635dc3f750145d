"""Word timing's attention reduction and DTW for a whole batch on the device: only the token times cross to the host.

``DtwAligner`` (``adapters/dtw``) does these steps per window on the host: softmax over the window's real frames,
z-score over tokens, median filter along time, mean over heads, DTW on the negated matrix, and each row's first
frame on the path. On a GPU the attention rows of a batch (hundreds of MB at large-v3's shapes) crossed to the host
for that, and the host's numpy took longer than decoding the batch (``docs/performance.md`` #85). Here one batched
computation does the same where the rows were captured, each sequence masked to its own rows and real frames:

- the reduction (``attention_matrices``) as MLX ops; the median of 7 by the same compare-exchanges as the host's
  filter (``adapters/dtw/filters.py``), so the medians are the same values;
- DTW (``dtw_first_frames``): a wavefront over anti-diagonals (every cell of one depends only on the two before it,
  as in openai-whisper's Triton kernel), each cell's move kept, then a backtrack from each sequence's last cell that
  notes where the path first reaches each row. As MLX ops here (any backend: the CPU's in the tests), and as one
  CUDA kernel (``cuda_dtw``) on MLX's CUDA backend. Ties go as in ``adapters/dtw/path.py``: the first of
  (diagonal, up, left) among equal totals; totals are float32 here (float64 there), so only near-ties may differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.filters import MEDIAN_7_STEPS, MEDIAN_NETWORK_WIDTH

EVAL_EVERY = 128  # the MLX-op DTW evaluates its lazy graph every this many anti-diagonals (or backtrack steps)

# cost (batch × rows × frames, float32, minimised), sizes (batch × 2 int32: each sequence's rows and frames) ->
# each row's first frame on the path (batch × rows int32; 0 past a sequence's rows)
DtwFirstFrames = Callable[[mx.array, mx.array], mx.array]


@frozen
class AlignedRows:
    """Which captured rows of one sequence are aligned, and over how many frames.

    ``batch_index``: the sequence's place on the rows' batch axis; ``steps``: the decoding steps whose rows are
    aligned (text tokens, then end-of-text's); ``frames``: the window's real frames.
    """

    batch_index: int
    steps: tuple[int, ...]
    frames: int


@frozen
class DeviceAlignment:
    """The device stage a decoder runs (``step.factory.choose_alignment``): the median filter's width, as the host
    aligner's, and the DTW (``cuda_dtw``'s kernel on CUDA, else the MLX ops here)."""

    median_width: int = 7
    dtw: DtwFirstFrames = field(factory=lambda: dtw_first_frames)

    def token_frames(self, rows: mx.array, sequences: Sequence[AlignedRows]) -> list[NDArray[np.int32]]:
        return token_frames(rows, sequences, self.median_width, self.dtw)


def token_frames(
    rows: mx.array, sequences: Sequence[AlignedRows], median_width: int, dtw: DtwFirstFrames | None = None
) -> list[NDArray[np.int32]]:
    """Each sequence's first frame on DTW's path for each of its aligned rows (``DtwAligner``'s ``token_frames``).

    ``rows``: steps × batch × heads × frames, raw QK as captured (any float dtype); ``dtw``: the DTW (``cuda_dtw``
    on CUDA; by default the MLX ops here). One transfer to the host: the sequences' frames, batch × rows int32.
    """
    if not sequences:
        return []
    longest = max(len(s.steps) for s in sequences)
    if min(len(s.steps) for s in sequences) == 0:
        raise ValueError("every aligned sequence needs at least one row (end-of-text's)")
    step_index = np.zeros((len(sequences), longest), np.int32)  # padded with step 0: masked below
    for n, sequence in enumerate(sequences):
        step_index[n, : len(sequence.steps)] = sequence.steps
    sizes = np.array([(len(s.steps), s.frames) for s in sequences], np.int32)
    frames = max(1, int(sizes[:, 1].max()))
    batch_index = mx.array([s.batch_index for s in sequences], mx.int32)
    gathered = rows[:, :, :, :frames][mx.array(step_index), batch_index[:, None]]  # sequences × rows × heads × frames
    attention = gathered.transpose(0, 2, 1, 3).astype(mx.float32)
    sizes_on_device = mx.array(sizes)
    matrix = attention_matrices(attention, sizes_on_device, median_width)
    first = (dtw or dtw_first_frames)(-matrix, mx.maximum(sizes_on_device, 1))  # no frames: all 0, set below
    host = np.array(first)  # the only transfer: sequences × rows int32
    return [
        host[n, : len(s.steps)] if s.frames > 0 else np.zeros(len(s.steps), np.int32) for n, s in enumerate(sequences)
    ]


def attention_matrices(attention: mx.array, sizes: mx.array, median_width: int) -> mx.array:
    """batch × heads × rows × frames raw QK -> batch × rows × frames, as ``adapters.dtw.attention_matrix`` for each
    sequence's first ``sizes[b, 0]`` rows and ``sizes[b, 1]`` frames (0 elsewhere).

    Softmax over the real frames, z-score over the real rows (population std; all rows equal -> 0), median filter of
    ``median_width`` along the real frames (mirrored at both ends, numpy's "reflect"), mean over heads. Infinite or
    NaN scores become the extreme finite values (NaN 0), as on the host.
    """
    if median_width < 1 or median_width % 2 == 0:
        raise ValueError(f"median filter width must be a positive odd number, got {median_width}")
    _batch, _heads, rows, frames = attention.shape
    row_count = sizes[:, 0].reshape(-1, 1, 1, 1)
    frame_count = sizes[:, 1].reshape(-1, 1, 1, 1)
    row_mask = mx.arange(rows).reshape(1, 1, -1, 1) < row_count
    frame_mask = mx.arange(frames).reshape(1, 1, 1, -1) < frame_count
    big = float(np.finfo(np.float32).max)
    scores = mx.nan_to_num(attention.astype(mx.float32), nan=0.0, posinf=big, neginf=-big)
    scores = mx.where(frame_mask, scores, -mx.inf)
    weights = mx.exp(scores - scores.max(axis=-1, keepdims=True))  # 0 at the padded frames
    weights = weights / weights.sum(axis=-1, keepdims=True)
    counted = mx.maximum(row_count, 1).astype(mx.float32)
    mean = mx.where(row_mask, weights, 0.0).sum(axis=-2, keepdims=True) / counted
    centred = weights - mean
    std = mx.sqrt(mx.where(row_mask, centred * centred, 0.0).sum(axis=-2, keepdims=True) / counted)
    zscores = centred / mx.where(std > 0.0, std, 1.0)
    filtered = median_filter(zscores, sizes[:, 1], median_width)
    matrix = filtered.mean(axis=1)
    return mx.where(row_mask[:, 0] & frame_mask[:, 0], matrix, 0.0)


def median_filter(x: mx.array, lengths: mx.array, width: int) -> mx.array:
    """Median of ``width`` neighbours along the last axis of ``x`` (batch × ... × frames), each batch entry over its
    first ``lengths[b]`` frames, mirrored at both ends without repeating the edge (numpy's ``"reflect"``, which
    keeps mirroring past a short axis); values past ``lengths[b]`` are left undefined."""
    if width == 1:
        return x
    half = width // 2
    frames = x.shape[-1]
    period = mx.maximum(2 * (lengths - 1), 1).reshape(-1, 1)  # one length's mirrored period; a 1-frame axis: 1
    # one gather makes each row mirrored at its own length (``half`` frames more each side); the lanes are slices
    position = mx.remainder(mx.arange(-half, frames + half).reshape(1, -1), period)  # floor modulo: never negative
    index = mx.where(position < lengths.reshape(-1, 1), position, period - position)
    index = index.reshape(index.shape[0], *(1,) * (x.ndim - 2), frames + 2 * half)
    padded = mx.take_along_axis(x, mx.broadcast_to(index, (*x.shape[:-1], frames + 2 * half)), axis=-1)
    lanes = [padded[..., k : k + frames] for k in range(width)]
    if width != MEDIAN_NETWORK_WIDTH:
        return mx.sort(mx.stack(lanes, axis=-1), axis=-1)[..., half]
    network: list[mx.array | None] = list(lanes)
    for i, j, low, high in MEDIAN_7_STEPS:
        a, b = network[i], network[j]
        assert a is not None and b is not None
        network[i] = mx.minimum(a, b) if low else None
        network[j] = mx.maximum(a, b) if high else None
    median = network[half]
    assert median is not None
    return median


def dtw_first_frames(cost: mx.array, sizes: mx.array) -> mx.array:
    """DTW as MLX ops, batched: for each sequence b, the cheapest monotone path through its ``sizes[b, 0]`` ×
    ``sizes[b, 1]`` corner of ``cost`` (batch × rows × frames, finite there), and the first frame of each row on it.

    A wavefront: the cells of an anti-diagonal are one vector operation (``cost`` skewed so that each anti-diagonal
    is a row, as ``adapters/dtw/path.py`` does), and each cell's move (0 diagonal, 1 up, 2 left: the first of the
    cheapest) is kept; then one backtrack step a loop iteration for every sequence at once. Cells outside a
    sequence's corner never feed one inside (a cell depends only on cells above and left of it).
    """
    batch, rows, frames = cost.shape
    skewed = _skew(cost.astype(mx.float32))  # anti-diagonal × batch × rows: [k, b, r] = cost[b, r, k - r]
    border = mx.full((batch, 1), mx.inf)
    before = mx.concatenate([mx.zeros((batch, 1)), mx.full((batch, rows), mx.inf)], axis=1)  # anti-diagonal 0
    last = mx.full((batch, rows + 1), mx.inf)  # anti-diagonal 1: [b, i] is cell (i, d - i), 1-based
    moves = []
    for k in range(rows + frames - 1):  # anti-diagonal d = k + 2
        diagonal, up, left = before[:, :-1], last[:, :-1], last[:, 1:]
        best = mx.minimum(mx.minimum(diagonal, up), left)
        move = mx.where((diagonal <= up) & (diagonal <= left), 0, mx.where(up <= left, 1, 2)).astype(mx.uint8)
        before, last = last, mx.concatenate([border, skewed[k] + best], axis=1)
        moves.append(move)
        if k % EVAL_EVERY == EVAL_EVERY - 1:
            mx.eval(before, last, moves)
    return _backtrack(mx.stack(moves).reshape(-1), sizes, batch, rows, frames)


def _skew(cost: mx.array) -> mx.array:
    """batch × rows × frames -> (rows + frames - 1) × batch × rows, [k, b, r] = cost[b, r, k - r] (inf off the
    matrix): each row padded with rows + 1 infinities and read back rows + frames to a row shifts row r by r."""
    batch, rows, frames = cost.shape
    padded = mx.concatenate([cost, mx.full((batch, rows, rows + 1), mx.inf)], axis=2)
    flat = padded.reshape(batch, -1)[:, : rows * (frames + rows)]
    shifted = flat.reshape(batch, rows, frames + rows)[:, :, : frames + rows - 1]
    return shifted.transpose(2, 0, 1)


def _backtrack(moves: mx.array, sizes: mx.array, batch: int, rows: int, frames: int) -> mx.array:
    """From each sequence's last cell back to the first, by the moves (flat anti-diagonal × batch × rows); on the
    first row only left steps, on the first column only up steps (as ``path.py``). Returns each row's first frame:
    the smallest frame the path visits in it (the path only moves left or up going back)."""
    i, j = sizes[:, 0], sizes[:, 1]  # 1-based cell
    sequence = mx.arange(batch)
    visited_rows, visited_frames = [], []
    for step in range(rows + frames - 1):
        visited_rows.append(i)
        visited_frames.append(j)
        move = moves[((i + j - 2) * batch + sequence) * rows + mx.maximum(i - 1, 0)]
        top, first_column = i <= 1, j <= 1
        up = ~top & (first_column | (move != 2))
        left = ~first_column & (top | (move != 1))
        i, j = i - up.astype(mx.int32), j - left.astype(mx.int32)
        if step % EVAL_EVERY == EVAL_EVERY - 1:
            mx.eval(i, j, visited_rows, visited_frames)
    path_rows = mx.stack(visited_rows)  # path length × batch, 1-based; the first cell repeats at the end
    path_frames = mx.stack(visited_frames)
    where_batch = mx.broadcast_to(sequence.reshape(1, -1), path_rows.shape)
    first = mx.full((batch, rows), frames, mx.int32)
    first = first.at[where_batch.reshape(-1), (path_rows - 1).reshape(-1)].minimum((path_frames - 1).reshape(-1))
    return mx.where(mx.arange(rows).reshape(1, -1) < sizes[:, :1], first, 0)
