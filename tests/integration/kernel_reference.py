"""``cuda_kernels``' four kernels as MLX ops, same operands and results: a fake of the kernels' module, so that
``KernelStep`` (its one-token step, compiled or not) runs on any backend, the CPU's in CI included."""

from __future__ import annotations

import mlx.core as mx

from onepass_whisper.adapters.mlx.cuda_kernels import LINEAR_KERNEL_MAX_ROWS, split_count

__all__ = ["cross_attention", "linear", "linear_fits", "self_attention", "split_count"]
from onepass_whisper.adapters.mlx.step.common import gelu as exact_gelu


def linear_fits(x: mx.array, weight: mx.array) -> bool:
    """As ``cuda_kernels.linear_fits`` by rows (any dtype here): above them the step takes MLX's matmul."""
    return x.shape[0] * x.shape[1] <= LINEAR_KERNEL_MAX_ROWS and x.shape[-1] == weight.shape[1]


def linear(
    x: mx.array,
    weight: mx.array,
    bias: mx.array | None = None,
    gelu: bool = False,
    residual: mx.array | None = None,
    norm: tuple[mx.array, mx.array, float] | None = None,
    counters: mx.array | None = None,
) -> mx.array:
    """The kernel's split of K (``counters``) changes only the order of the sums: one matmul here."""
    if norm is not None:
        x = mx.fast.layer_norm(x, norm[0], norm[1], norm[2])
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    if gelu:
        y = exact_gelu(y)
    return y if residual is None else residual + y


def _attend(q: mx.array, k: mx.array, v: mx.array, n_head: int, mask: mx.array | None) -> tuple[mx.array, mx.array]:
    """q: batch × 1 × state, k, v: batch × keys × state -> (batch × 1 × state, scaled scores batch × heads × keys)."""
    batch, keys, state = k.shape
    dh = state // n_head
    qh = q.reshape(batch, 1, n_head, dh).transpose(0, 2, 1, 3)
    kh = k.reshape(batch, keys, n_head, dh).transpose(0, 2, 3, 1)
    vh = v.reshape(batch, keys, n_head, dh).transpose(0, 2, 1, 3)
    scores = ((qh * dh**-0.5) @ kh).astype(mx.float32)  # batch × heads × 1 × keys
    weights = mx.softmax(scores if mask is None else mx.where(mask, scores, -mx.inf), axis=-1)
    out = (weights.astype(v.dtype) @ vh).transpose(0, 2, 1, 3).reshape(batch, 1, state)
    return out, scores[:, :, 0, :]


def self_attention(
    qkv: mx.array, cache: mx.array, positions: mx.array, n_head: int, max_positions: int
) -> tuple[mx.array, mx.array]:
    """The kernel writes the step's key and value into ``cache`` in place; here a new array has them."""
    state = cache.shape[-1] // 2
    fresh = qkv[:, :, state:]  # batch × 1 × 2·state
    at = mx.broadcast_to((positions - 1)[:, None, None], fresh.shape)  # each row at its own position
    cache = mx.put_along_axis(cache, at, fresh, axis=1)
    # each row's positions written so far, this step's included
    mask = (mx.arange(cache.shape[1])[None, :] < positions[:, None])[:, None, None, :]
    out, _ = _attend(qkv[:, :, :state], cache[:, :, :state], cache[:, :, state:], n_head, mask)
    return out, cache


def cross_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    n_head: int,
    heads: tuple[int, ...] = (),
    counters: mx.array | None = None,
) -> tuple[mx.array, mx.array | None]:
    """The kernel's split of the frames (``counters``) changes only the order of the sums: one softmax here."""
    out, scores = _attend(q, k, v, n_head, None)
    return out, (scores[:, list(heads)].astype(q.dtype) if heads else None)
