"""Whisper's text decoder run step by step over a batch, with a per-sequence KV cache and attention capture.

mlx-whisper's ``TextDecoder`` already returns the cross-attention QK of every layer, but its batch inference throws
it away, grows the self-attention cache by concatenation and computes every head's QK. Here the self-attention K/V
live in a preallocated buffer written in place, the cross-attention K/V are computed once per window, and the QK
is kept only for the alignment heads' layers (and only its last query row), so word timing needs no second pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np
from numpy.typing import NDArray
from mlx_whisper.whisper import MultiHeadAttention, ResidualAttentionBlock, Whisper
from scipy import special

KV_BLOCK = 64  # tokens: the self-attention buffer grows by this many positions at a time


def gelu(x: mx.array) -> mx.array:
    """The exact GELU, as ``mlx.nn.gelu`` (whose module has no type stubs)."""
    return x * (1 + mx.erf(x / 1.4142135623730951)) / 2


# the same GELU as one fused kernel (GPU): five elementwise passes over the MLP's activations become one
fused_gelu = mx.compile(gelu, shapeless=True)


def causal_mask(length: int, offset: int, dtype: mx.Dtype) -> mx.array:
    """Additive mask: query ``i`` (at position offset + i) sees keys 0 .. offset + i."""
    queries = mx.arange(length)[:, None] + offset
    keys = mx.arange(offset + length)[None, :]
    return mx.where(keys > queries, mx.array(-1e9, dtype=dtype), mx.array(0, dtype=dtype))


def _split_heads(x: mx.array, n_head: int) -> mx.array:
    batch, length, state = x.shape
    return x.reshape(batch, length, n_head, state // n_head).transpose(0, 2, 1, 3)  # batch × heads × length × dh


def _merge_heads(x: mx.array) -> mx.array:
    batch, heads, length, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * dh)


def encode(model: Whisper, mels: mx.array, host_math: bool = False) -> mx.array:
    """mlx-whisper's ``AudioEncoder`` (batch × frames × mels -> batch × audio ctx × state), same layers and weights.

    Only the non-matmul math differs. By default (GPU) the attention is fused
    (``mx.fast.scaled_dot_product_attention``): the 1500 × 1500 weights are never needed. With ``host_math`` (the
    CPU backend) the self-attention (two matmuls and the softmax) runs in numpy and the GELU in scipy: their
    vectorised ``exp``/``erf`` are 10-20× faster than MLX's CPU kernels here (``docs/performance.md``); the other
    matmuls stay in MLX (its BLAS). One window's attention weights (heads × 1500 × 1500) at a time bound the memory.
    """
    encoder = model.encoder
    activation = _host_gelu if host_math else fused_gelu
    x = activation(encoder.conv1(mels))
    x = activation(encoder.conv2(x))
    x = x + encoder._positional_embedding
    blocks: list[ResidualAttentionBlock] = encoder.blocks
    for block in blocks:
        attn = block.attn
        h = block.attn_ln(x)
        q = _split_heads(attn.query(h), attn.n_head)
        k = _split_heads(attn.key(h), attn.n_head)
        v = _split_heads(attn.value(h), attn.n_head)
        scale = q.shape[-1] ** -0.5
        if host_math:
            out = _host_attention(q, k, v, scale)
        else:
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
        x = x + attn.out(_merge_heads(out))
        x = x + block.mlp2(activation(block.mlp1(block.mlp_ln(x))))
    result: mx.array = encoder.ln_post(x)
    return result


def _host_attention(q: mx.array, k: mx.array, v: mx.array, scale: float) -> mx.array:
    """Softmax attention (batch × heads × frames × dh each) computed in numpy, one window at a time.

    Only q, k, v and the output cross between MLX and numpy (2.3 MB a window and tensor for tiny), never the
    heads × 1500 × 1500 scores; the scale goes into q, and the softmax's normalisation is applied to the output
    (frames × dh) instead of the scores: ``softmax(s) @ v = (exp(s - max) @ v) / sum(exp(s - max))``. On 2 cores,
    tiny.en: a window's attention layer 290 -> 70 ms (``docs/performance.md`` #28).
    """
    qn = np.array(q, dtype=np.float32)
    qn *= np.float32(scale)
    kn, vn = np.array(k, dtype=np.float32), np.array(v, dtype=np.float32)
    out = np.empty_like(qn)
    for i in range(qn.shape[0]):  # one window's heads × frames × frames scores at a time bound the memory
        out[i] = _softmax_times(np.matmul(qn[i], kn[i].transpose(0, 2, 1)), vn[i])
    return mx.array(out).astype(q.dtype)


def _softmax_times(scores: NDArray[np.float32], v: NDArray[np.float32]) -> NDArray[np.float32]:
    """``softmax(scores) @ v`` over the last axis, with ``scores`` overwritten: the exponentials are taken in place
    and the normalisation divides the (much smaller) product, not the scores."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    out: NDArray[np.float32] = np.matmul(scores, v) / scores.sum(axis=-1, keepdims=True)
    return out


def _host_gelu(x: mx.array) -> mx.array:
    """The exact GELU, computed in numpy/scipy."""
    a = np.array(x, dtype=np.float32)
    result = a * (1.0 + special.erf(a * np.float32(0.7071067811865476))) * np.float32(0.5)
    return mx.array(result).astype(x.dtype)


class DecoderState:
    """Everything one batch of sequences carries between steps; rows follow the active sequences.

    ``explicit_cross``: the cross-attention as two matmuls and a softmax over K stored transposed, instead of
    ``mx.fast.scaled_dot_product_attention``: faster on the GPU at large batches (``docs/performance.md``), and the
    alignment heads' QK comes with it. ``host_cross`` (the CPU backend): the same, in numpy, over K and V kept as
    numpy arrays; its ``exp`` is 10-20× faster than MLX's CPU kernel. ``fused``: the MLP's GELU as one compiled
    kernel (GPU).
    """

    def __init__(
        self,
        model: Whisper,
        audio_features: mx.array,
        alignment_heads: Sequence[tuple[int, int]],
        explicit_cross: bool = False,
        fused: bool = False,
        host_cross: bool = False,
    ) -> None:
        self.model = model
        self.explicit_cross = explicit_cross or host_cross
        self.host_cross = host_cross
        self.gelu = fused_gelu if fused else gelu
        blocks: list[ResidualAttentionBlock] = model.decoder.blocks
        self.n_head = blocks[0].attn.n_head
        batch = audio_features.shape[0]
        state = model.dims.n_text_state
        dtype = audio_features.dtype
        # cross-attention K/V: computed once per window, read every step
        self.cross_kv: list[tuple[mx.array, mx.array]] = []
        for block in blocks:
            cross = block.cross_attn
            assert cross is not None
            # contiguous once here, or every step would copy the transposed views again
            k = _split_heads(cross.key(audio_features), self.n_head)
            k = mx.contiguous(k.transpose(0, 1, 3, 2) if self.explicit_cross else k)  # batch × heads × dh × frames
            v = mx.contiguous(_split_heads(cross.value(audio_features), self.n_head))
            self.cross_kv.append((k, v))
        self.host_kv: list[tuple[NDArray[np.float32], NDArray[np.float32]]] = []
        if host_cross:  # numpy holds them instead
            self.host_kv = [(np.array(k, dtype=np.float32), np.array(v, dtype=np.float32)) for k, v in self.cross_kv]
            self.cross_kv = []
        self.self_k = [mx.zeros((batch, self.n_head, KV_BLOCK, state // self.n_head), dtype=dtype) for _ in blocks]
        self.self_v = [mx.zeros((batch, self.n_head, KV_BLOCK, state // self.n_head), dtype=dtype) for _ in blocks]
        self.offset = 0
        # layer -> head indices whose QK is captured
        self.capture: dict[int, list[int]] = {}
        for layer, head in alignment_heads:
            self.capture.setdefault(layer, []).append(head)
        self.alignment_heads = list(alignment_heads)

    def keep(self, rows: mx.array) -> None:
        """Compact the batch to ``rows`` (indices of the sequences that go on)."""
        self.cross_kv = [(k[rows], v[rows]) for k, v in self.cross_kv]
        if self.host_cross:
            kept = np.array(rows)
            self.host_kv = [(k[kept], v[kept]) for k, v in self.host_kv]
        self.self_k = [k[rows] for k in self.self_k]
        self.self_v = [v[rows] for v in self.self_v]

    def _reserve(self, length: int) -> None:
        needed = self.offset + length
        capacity = self.self_k[0].shape[2]
        if needed <= capacity:
            return
        grow = ((needed - capacity + KV_BLOCK - 1) // KV_BLOCK) * KV_BLOCK
        for i, (k, v) in enumerate(zip(self.self_k, self.self_v)):
            pad = mx.zeros((k.shape[0], k.shape[1], grow, k.shape[3]), dtype=k.dtype)
            self.self_k[i] = mx.concatenate([k, pad], axis=2)
            self.self_v[i] = mx.concatenate([v, pad], axis=2)

    def step(self, tokens: mx.array, logit_positions: Sequence[int] = (-1,)) -> tuple[list[mx.array], mx.array]:
        """Feed ``tokens`` (batch × length) and advance the cache.

        Returns the logits (batch × vocab, float32) at each of ``logit_positions`` and the alignment heads'
        cross-attention QK of the last position (batch × alignment heads × audio frames, in the model's dtype).
        """
        model = self.model
        length = tokens.shape[1]
        self._reserve(length)
        start, end = self.offset, self.offset + length
        x = model.decoder.token_embedding(tokens) + model.decoder.positional_embedding[start:end]
        mask = causal_mask(length, start, x.dtype) if length > 1 else None
        captured: dict[tuple[int, int], mx.array] = {}
        for layer, block in enumerate(model.decoder.blocks):
            x = x + self._self_attention(layer, block.attn, block.attn_ln(x), start, end, mask)
            cross = block.cross_attn
            assert cross is not None and block.cross_attn_ln is not None
            if self.host_cross:
                y, qk = self._host_cross_attention(layer, cross, block.cross_attn_ln(x))
            else:
                y, qk = self._cross_attention(layer, cross, block.cross_attn_ln(x), *self.cross_kv[layer])
            x = x + y
            if qk is not None:
                for i, head in enumerate(self.capture[layer]):
                    captured[(layer, head)] = qk[:, i]
            x = x + block.mlp2(self.gelu(block.mlp1(block.mlp_ln(x))))
        self.offset = end
        picked = model.decoder.ln(x[:, list(logit_positions)])
        logits = model.decoder.token_embedding.as_linear(picked).astype(mx.float32)  # batch × positions × vocab
        attention = mx.stack([captured[h] for h in self.alignment_heads], axis=1)
        return [logits[:, i] for i in range(len(logit_positions))], attention

    def _self_attention(
        self, layer: int, attn: MultiHeadAttention, x: mx.array, start: int, end: int, mask: mx.array | None
    ) -> mx.array:
        q = _split_heads(attn.query(x), self.n_head)
        self.self_k[layer][:, :, start:end] = _split_heads(attn.key(x), self.n_head)
        self.self_v[layer][:, :, start:end] = _split_heads(attn.value(x), self.n_head)
        k = self.self_k[layer][:, :, :end]
        v = self.self_v[layer][:, :, :end]
        scale = q.shape[-1] ** -0.5
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        merged: mx.array = attn.out(_merge_heads(out))
        return merged

    def _cross_attention(
        self, layer: int, attn: MultiHeadAttention, x: mx.array, k: mx.array, v: mx.array
    ) -> tuple[mx.array, mx.array | None]:
        q = _split_heads(attn.query(x), self.n_head)
        scale = q.shape[-1] ** -0.5
        heads = self.capture.get(layer)
        if self.explicit_cross:
            scores = (q * scale) @ k  # batch × heads × length × frames (k: batch × heads × dh × frames)
            out = mx.softmax(scores, axis=-1, precise=True) @ v
            qk = None if heads is None else scores[:, :, -1, :][:, _head_index(heads)]
            return attn.out(_merge_heads(out)), qk
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
        if heads is None:
            return attn.out(_merge_heads(out)), None
        # the alignment heads' QK of the last query only: their K rows are read twice, every other head's once
        index = _head_index(heads)
        qk = (q[:, index, -1:, :] * scale) @ k[:, index].transpose(0, 1, 3, 2)  # batch × captured × 1 × frames
        return attn.out(_merge_heads(out)), qk[:, :, 0, :]


    def _host_cross_attention(
        self, layer: int, attn: MultiHeadAttention, x: mx.array
    ) -> tuple[mx.array, mx.array | None]:
        """``_cross_attention`` in numpy; the QK of the alignment heads' last query comes from the scores."""
        k, v = self.host_kv[layer]  # batch × heads × dh × frames, batch × heads × frames × dh
        q = np.array(_split_heads(attn.query(x), self.n_head), dtype=np.float32)  # batch × heads × length × dh
        q *= np.float32(q.shape[-1] ** -0.5)
        scores = np.matmul(q, k)  # batch × heads × length × frames
        heads = self.capture.get(layer)
        qk = None if heads is None else mx.array(scores[:, heads, -1, :])  # copied before _softmax_times overwrites
        out = _softmax_times(scores, v)
        return attn.out(_merge_heads(mx.array(out).astype(x.dtype))), qk


def _head_index(heads: list[int]) -> slice | mx.array:
    """The heads as a slice where they are consecutive (the usual case; large-v3: one a layer): views, no copy."""
    first, count = heads[0], len(heads)
    return slice(first, first + count) if heads == list(range(first, first + count)) else mx.array(heads)
