"""What the three decoder steps share, written once: the cache's growth, the causal mask, the capture plan, and
the MLX helpers of the two device steps (heads split and merged, the GELU, the transposed weights, the captured QK).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np
from mlx_whisper.whisper import ResidualAttentionBlock, Whisper
from numpy.typing import NDArray

KV_BLOCK = 64  # tokens: the self-attention cache grows by this many positions at a time

# an additive mask's hidden entry: finite, so that exp(score + MASKED - max) is exactly 0 in float32 (and -inf in
# float16, where it overflows) and a row is never all -inf; every step masks with this one value
MASKED = -1e9


def causal_mask(length: int, offset: int) -> NDArray[np.float32]:
    """Additive mask (length × offset + length): query ``i`` (at position offset + i) sees keys 0 .. offset + i."""
    queries = np.arange(length)[:, None] + offset
    keys = np.arange(offset + length)[None, :]
    result: NDArray[np.float32] = np.where(keys > queries, np.float32(MASKED), np.float32(0)).astype(
        np.float32
    )  # a typed name: numpy's stubs give Any here for Python 3.10
    return result


def row_masks(offsets: NDArray[np.int64], end: int) -> NDArray[np.float32]:
    """Additive masks (rows × 1 × 1 × end) of one query a row at each row's own position ``offsets[row]``: the
    keys after it hidden (a refilled row's cache holds an earlier sequence's keys there)."""
    hidden = np.arange(end)[None, :] > np.asarray(offsets)[:, None]
    result: NDArray[np.float32] = np.where(hidden, np.float32(MASKED), np.float32(0)).astype(np.float32)
    return result[:, None, None, :]


def growth(offset: int, length: int, capacity: int) -> int:
    """The positions to add to a cache of ``capacity`` so that ``length`` more fit after ``offset``: 0, or whole
    ``KV_BLOCK``s (each growth copies the cache, so it grows by blocks, not by token)."""
    needed = offset + length
    if needed <= capacity:
        return 0
    return -(-(needed - capacity) // KV_BLOCK) * KV_BLOCK


def capture_plan(alignment_heads: Sequence[tuple[int, int]]) -> tuple[dict[int, list[int]], list[int] | None]:
    """Each layer's heads whose QK is captured (ascending), and the order that takes the captures, layer by layer
    (sorted by layer and head), back to ``alignment_heads``' order (None: they are in it)."""
    capture: dict[int, list[int]] = {}
    for layer, head in sorted(alignment_heads):
        capture.setdefault(layer, []).append(head)
    ordered = sorted(alignment_heads)
    reorder = None if ordered == list(alignment_heads) else [ordered.index(h) for h in alignment_heads]
    return capture, reorder


def gelu(x: mx.array) -> mx.array:
    """The exact GELU, as ``mlx.nn.gelu`` (whose module has no type stubs)."""
    return x * (1 + mx.erf(x / 1.4142135623730951)) / 2


# the same GELU as one fused kernel (GPU): five elementwise passes over the MLP's activations become one
fused_gelu = mx.compile(gelu, shapeless=True)


def split_heads(x: mx.array, n_head: int) -> mx.array:
    batch, length, state = x.shape
    return x.reshape(batch, length, n_head, state // n_head).transpose(0, 2, 1, 3)  # batch × heads × length × dh


def merge_heads(x: mx.array) -> mx.array:
    batch, heads, length, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * dh)


def linear_weights(model: Whisper) -> list[mx.array]:
    """The text decoder's linear weights, one a linear (out × in), the logits' (the token embedding) first."""
    weights = [model.decoder.token_embedding.weight]
    blocks: list[ResidualAttentionBlock] = model.decoder.blocks
    for block in blocks:
        assert block.cross_attn is not None
        weights += [block.attn.query.weight, block.attn.key.weight, block.attn.value.weight, block.attn.out.weight]
        weights += [block.cross_attn.query.weight, block.cross_attn.out.weight, block.mlp1.weight, block.mlp2.weight]
    return weights


def transposed_once(weights: Sequence[mx.array]) -> dict[int, mx.array]:
    """Each weight transposed once and evaluated (a view: the weight's own memory), by the weight's id: a leaf of
    every step's graph, where ``x @ w.T`` (as ``nn.Linear`` computes) would add a Transpose node a call."""
    transposed = {id(weight): weight.T for weight in weights}
    mx.eval(list(transposed.values()))
    return transposed


def captured_attention(captured: list[mx.array], reorder: mx.array | None) -> mx.array:
    """The capturing layers' QK (each batch × its heads × frames, in layer order) as one batch × heads × frames,
    in the alignment heads' order (``capture_plan``'s ``reorder``, as an array)."""
    attention = captured[0] if len(captured) == 1 else mx.concatenate(captured, axis=1)
    return attention if reorder is None else attention[:, reorder]


def last_query_qk(q: mx.array, k: mx.array, heads: list[int], scale: float) -> mx.array:
    """``heads``' scaled QK of the last query (q, k: batch × heads × length × dh): batch × len(heads) × keys."""
    index = head_index(heads)
    return ((q[:, index, -1:, :] * scale) @ k[:, index].transpose(0, 1, 3, 2))[:, :, 0, :]


def head_index(heads: list[int]) -> slice | mx.array:
    """The heads as a slice where they are consecutive (the usual case; large-v3: one a layer): views, no copy."""
    first, count = heads[0], len(heads)
    return slice(first, first + count) if heads == list(range(first, first + count)) else mx.array(heads)
