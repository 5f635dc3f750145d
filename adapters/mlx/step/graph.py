"""The decoder step as MLX ops, one graph a step: a GPU's (Metal; CUDA for the prompt and without the kernels).

mlx-whisper's ``TextDecoder`` already returns the cross-attention QK of every layer, but its batch inference throws
it away, grows the self-attention cache by concatenation and computes every head's QK. Here the self-attention K/V
live in a preallocated buffer written in place, the cross-attention K/V are computed once per window, and the QK
is kept only for the alignment heads' layers (and only its last query row), so word timing needs no second pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_whisper.whisper import MultiHeadAttention, ResidualAttentionBlock, Whisper
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx.step.common import (
    KV_BLOCK,
    capture_plan,
    captured_attention,
    causal_mask,
    fused_gelu,
    gelu,
    growth,
    head_index,
    last_query_qk,
    linear_weights,
    merge_heads,
    row_masks,
    split_heads,
    transposed_once,
)

# one residual block over ``x`` (layer, block, x, start, end, mask, captured): its alignment heads' QK, if any,
# appended to ``captured``
Layer = Callable[[int, ResidualAttentionBlock, mx.array, int, int, "mx.array | None", list[mx.array]], mx.array]


def run_tokens(
    model: Whisper,
    tokens: mx.array,
    start: int,
    logit_positions: Sequence[int],
    layer: Layer,
    logits_of: Callable[[mx.array], mx.array],
    reorder: mx.array | None,
    offsets: NDArray[np.int64] | None = None,
) -> tuple[list[mx.array], mx.array]:
    """``tokens`` (batch × length, at positions ``start``..) through the embedding, every ``layer`` and the logits'
    linear (``logits_of``): the step both device steps share (the kernel step for the prompt).

    ``offsets``: one token a row at each row's own position (rows refilled at different times); ``start`` is then
    unused, ``end`` is the furthest row's, and the layers get each row's mask (batch × 1 × 1 × end)."""
    length = tokens.shape[1]
    end = start + length
    embedded = model.decoder.token_embedding(tokens)
    if offsets is None:
        x = embedded + model.decoder.positional_embedding[start:end]
        mask = mx.array(causal_mask(length, start)).astype(x.dtype) if length > 1 else None
    else:
        end = int(offsets.max()) + 1
        x = embedded + model.decoder.positional_embedding[mx.array(offsets)][:, None]
        mask = mx.array(row_masks(offsets, end)).astype(x.dtype)
    captured: list[mx.array] = []  # each capturing layer's QK (batch × its heads × frames), in layer order
    for index, block in enumerate(model.decoder.blocks):
        x = layer(index, block, x, start, end, mask, captured)
    picked = model.decoder.ln(x if length == 1 else x[:, list(logit_positions)])
    logits = logits_of(picked).astype(mx.float32)  # batch × positions × vocab
    attention = captured_attention(captured, reorder)
    if length == 1:
        return [logits[:, 0]] * len(logit_positions), attention
    return [logits[:, i] for i in range(len(logit_positions))], attention


class GraphStep:
    """``DecoderStep`` as MLX ops; the caches head-major (batch × heads × positions × dh).

    ``explicit_cross``: the cross-attention as two matmuls and a softmax over K stored transposed, instead of
    ``mx.fast.scaled_dot_product_attention``: faster on the GPU at large batches (``docs/performance.md``), and the
    alignment heads' QK comes with it. ``fused``: the MLP's GELU as one compiled kernel (GPU). Both are the
    factory's to decide (``factory.Backend``).
    """

    def __init__(
        self,
        model: Whisper,
        audio_features: mx.array,
        alignment_heads: Sequence[tuple[int, int]],
        explicit_cross: bool = False,
        fused: bool = False,
    ) -> None:
        self.model = model
        self.explicit_cross = explicit_cross
        self.gelu = fused_gelu if fused else gelu
        blocks: list[ResidualAttentionBlock] = model.decoder.blocks
        self.n_head = blocks[0].attn.n_head
        # each row's positions so far: equal until a row is refilled (``put``), then each row's own
        self.offsets = np.zeros(audio_features.shape[0], np.int64)
        self.capture, reorder = capture_plan(alignment_heads)
        self._reorder = None if reorder is None else mx.array(reorder)
        self.cross_kv: list[tuple[mx.array, mx.array]] = []  # computed once per window, read every step
        for block in blocks:
            cross = block.cross_attn
            assert cross is not None
            # contiguous once here, or every step would copy the transposed views again
            k = split_heads(cross.key(audio_features), self.n_head)
            k = mx.contiguous(k.transpose(0, 1, 3, 2) if explicit_cross else k)  # batch × heads × dh × frames
            v = mx.contiguous(split_heads(cross.value(audio_features), self.n_head))
            self.cross_kv.append((k, v))
        shape = (audio_features.shape[0], self.n_head, KV_BLOCK, model.dims.n_text_state // self.n_head)
        self.self_k = [mx.zeros(shape, dtype=audio_features.dtype) for _ in blocks]
        self.self_v = [mx.zeros(shape, dtype=audio_features.dtype) for _ in blocks]
        self._transposed = transposed_once(linear_weights(model))

    def _linear(self, layer: Any, x: mx.array) -> mx.array:
        """``layer(x)`` for an ``nn.Linear`` (or the embedding as the logits' linear) over its transposed weight."""
        weight = self._transposed[id(layer.weight)]
        return mx.addmm(layer.bias, x, weight) if "bias" in layer else x @ weight

    @property
    def offset(self) -> int:
        """The positions so far of the row furthest on (every row's, until a row is refilled)."""
        return int(self.offsets.max(initial=0))

    @offset.setter
    def offset(self, value: int) -> None:
        self.offsets[:] = value

    def keep(self, rows: mx.array) -> None:
        self.cross_kv = [(k[rows], v[rows]) for k, v in self.cross_kv]
        self.self_k = [k[rows] for k in self.self_k]
        self.self_v = [v[rows] for v in self.self_v]
        self.offsets = self.offsets[np.array(rows)]

    def put(self, rows: mx.array, fresh: GraphStep) -> None:
        """Rows ``rows`` take ``fresh``'s sequences (one a row, in order, prompted): their cross-attention K/V,
        their self-attention cache and their own positions from 0."""
        end = fresh.offset
        self._reserve(end - self.offset)
        for (k, v), (new_k, new_v) in zip(self.cross_kv, fresh.cross_kv):
            k[rows] = new_k
            v[rows] = new_v
        for mine, theirs in ((self.self_k, fresh.self_k), (self.self_v, fresh.self_v)):
            for buffer, new in zip(mine, theirs):
                buffer[rows, :, :end] = new[:, :, :end]
        self.offsets[np.array(rows)] = fresh.offsets

    def _reserve(self, length: int) -> None:
        grow = growth(self.offset, length, self.self_k[0].shape[2])
        if not grow:
            return
        for i, (k, v) in enumerate(zip(self.self_k, self.self_v)):
            pad = mx.zeros((k.shape[0], k.shape[1], grow, k.shape[3]), dtype=k.dtype)
            self.self_k[i] = mx.concatenate([k, pad], axis=2)
            self.self_v[i] = mx.concatenate([v, pad], axis=2)

    def step(self, tokens: mx.array, logit_positions: Sequence[int] = (-1,)) -> tuple[list[mx.array], mx.array]:
        length = tokens.shape[1]
        uniform = bool((self.offsets == self.offsets[0]).all()) if len(self.offsets) else True
        if not uniform and length > 1:
            raise ValueError("a step of several tokens needs every row at the same position")
        self._reserve(length)
        embedding = self.model.decoder.token_embedding
        result = run_tokens(
            self.model,
            tokens,
            self.offset,
            logit_positions,
            self._layer,
            lambda x: self._linear(embedding, x),
            self._reorder,
            None if uniform else self.offsets,
        )
        self.offsets = self.offsets + length
        return result

    def _layer(
        self,
        layer: int,
        block: ResidualAttentionBlock,
        x: mx.array,
        start: int,
        end: int,
        mask: mx.array | None,
        captured: list[mx.array],
    ) -> mx.array:
        x = x + self._self_attention(layer, block.attn, block.attn_ln(x), start, end, mask)
        cross = block.cross_attn
        assert cross is not None and block.cross_attn_ln is not None
        y, qk = self._cross_attention(layer, cross, block.cross_attn_ln(x), *self.cross_kv[layer])
        x = x + y
        if qk is not None:
            captured.append(qk)
        return x + self._linear(block.mlp2, self.gelu(self._linear(block.mlp1, block.mlp_ln(x))))

    def _self_attention(
        self, layer: int, attn: MultiHeadAttention, x: mx.array, start: int, end: int, mask: mx.array | None
    ) -> mx.array:
        q = split_heads(self._linear(attn.query, x), self.n_head)
        new_k = split_heads(self._linear(attn.key, x), self.n_head)
        new_v = split_heads(self._linear(attn.value, x), self.n_head)
        if mask is not None and mask.ndim == 4:  # one token a row, each at its own position
            at = mx.broadcast_to(mx.array(self.offsets)[:, None, None, None], new_k.shape)
            self.self_k[layer] = mx.put_along_axis(self.self_k[layer], at, new_k, axis=2)
            self.self_v[layer] = mx.put_along_axis(self.self_v[layer], at, new_v, axis=2)
        else:
            self.self_k[layer][:, :, start:end] = new_k
            self.self_v[layer][:, :, start:end] = new_v
        k = self.self_k[layer][:, :, :end]
        v = self.self_v[layer][:, :, :end]
        scale = q.shape[-1] ** -0.5
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        return self._linear(attn.out, merge_heads(out))

    def _cross_attention(
        self, layer: int, attn: MultiHeadAttention, x: mx.array, k: mx.array, v: mx.array
    ) -> tuple[mx.array, mx.array | None]:
        q = split_heads(self._linear(attn.query, x), self.n_head)
        scale = q.shape[-1] ** -0.5
        heads = self.capture.get(layer)
        if self.explicit_cross:
            scores = (q * scale) @ k  # batch × heads × length × frames (k: batch × heads × dh × frames)
            out = mx.softmax(scores, axis=-1, precise=True) @ v
            qk = None if heads is None else scores[:, :, -1, :][:, head_index(heads)]
            return self._linear(attn.out, merge_heads(out)), qk
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
        if heads is None:
            return self._linear(attn.out, merge_heads(out)), None
        # the alignment heads' QK of the last query only: their K rows are read twice, every other head's once
        return self._linear(attn.out, merge_heads(out)), last_query_qk(q, k, heads, scale)
