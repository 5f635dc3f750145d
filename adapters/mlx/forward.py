"""Whisper's text decoder run step by step over a batch, with a per-sequence KV cache and attention capture.

mlx-whisper's ``TextDecoder`` already returns the cross-attention QK of every layer, but its batch inference throws
it away, grows the self-attention cache by concatenation and computes every head's QK. Here the self-attention K/V
live in a preallocated buffer written in place, the cross-attention K/V are computed once per window, and the QK
is kept only for the alignment heads' layers (and only its last query row), so word timing needs no second pass.
On MLX's CUDA backend the one-token steps go through ``kernel_step.KernelDecoderState`` (custom kernels, compiled).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import mlx.core as mx
import numpy as np
from numpy.typing import NDArray
from mlx_whisper.whisper import MultiHeadAttention, ResidualAttentionBlock, Whisper

from onepass_whisper.adapters.mlx import cpu_decoder, cpu_kernels

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


def split_heads(x: mx.array, n_head: int) -> mx.array:
    batch, length, state = x.shape
    return x.reshape(batch, length, n_head, state // n_head).transpose(0, 2, 1, 3)  # batch × heads × length × dh


def merge_heads(x: mx.array) -> mx.array:
    batch, heads, length, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * dh)


def encode(model: Whisper, mels: mx.array, host_math: bool = False, pool: Executor | None = None) -> mx.array:
    """mlx-whisper's ``AudioEncoder`` (batch × frames × mels -> batch × audio ctx × state), same layers and weights.

    By default (GPU) the attention is fused (``mx.fast.scaled_dot_product_attention``): the 1500 × 1500 weights
    are never needed. With ``host_math`` (the CPU backend) the whole encoder runs in numpy over the model's own
    weights (``cpu_kernels.encode``), its row blocks and attention heads shared out among ``pool``'s threads: MLX's
    CPU ``exp``/``erf`` are not vectorised, and MLX keeps its BLAS on one thread for the decoder's small matmuls
    (``docs/performance.md`` #28, #30-#31).
    """
    if host_math:
        features = cpu_kernels.encode(encoder_weights(model), np.array(mels, dtype=np.float32), pool)
        return mx.array(features).astype(mels.dtype)
    encoder = model.encoder
    x = fused_gelu(encoder.conv1(mels))
    x = fused_gelu(encoder.conv2(x))
    x = x + encoder._positional_embedding
    blocks: list[ResidualAttentionBlock] = encoder.blocks
    for block in blocks:
        attn = block.attn
        h = block.attn_ln(x)
        q = split_heads(attn.query(h), attn.n_head)
        k = split_heads(attn.key(h), attn.n_head)
        v = split_heads(attn.value(h), attn.n_head)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5)
        x = x + attn.out(merge_heads(out))
        x = x + block.mlp2(fused_gelu(block.mlp1(block.mlp_ln(x))))
    result: mx.array = encoder.ln_post(x)
    return result


def encoder_weights(model: Whisper) -> cpu_kernels.EncoderWeights:
    """The model's audio encoder as numpy views of its weights (float32 on the CPU backend: no copies)."""
    encoder = model.encoder
    blocks: list[ResidualAttentionBlock] = encoder.blocks
    return cpu_kernels.EncoderWeights(
        conv1=_conv(encoder.conv1),
        conv2=_conv(encoder.conv2),
        positional=_array(encoder._positional_embedding),
        blocks=tuple(
            cpu_kernels.EncoderBlock(
                attn_ln=_norm(b.attn_ln),
                query=_linear(b.attn.query),
                key=_linear(b.attn.key),
                value=_linear(b.attn.value),
                out=_linear(b.attn.out),
                mlp_ln=_norm(b.mlp_ln),
                mlp1=_linear(b.mlp1),
                mlp2=_linear(b.mlp2),
            )
            for b in blocks
        ),
        ln_post=_norm(encoder.ln_post),
        n_head=blocks[0].attn.n_head,
    )


def decoder_weights(model: Whisper) -> cpu_decoder.DecoderWeights:
    """The model's text decoder as numpy views of its weights (float32 on the CPU backend: no copies)."""
    decoder = model.decoder
    blocks: list[ResidualAttentionBlock] = decoder.blocks

    def block(b: ResidualAttentionBlock) -> cpu_decoder.DecoderBlock:
        cross, cross_ln = b.cross_attn, b.cross_attn_ln
        assert cross is not None and cross_ln is not None
        return cpu_decoder.DecoderBlock(
            attn_ln=_norm(b.attn_ln),
            query=_linear(b.attn.query),
            key=_linear(b.attn.key),
            value=_linear(b.attn.value),
            out=_linear(b.attn.out),
            cross_ln=_norm(cross_ln),
            cross_query=_linear(cross.query),
            cross_key=_linear(cross.key),
            cross_value=_linear(cross.value),
            cross_out=_linear(cross.out),
            mlp_ln=_norm(b.mlp_ln),
            mlp1=_linear(b.mlp1),
            mlp2=_linear(b.mlp2),
        )

    return cpu_decoder.DecoderWeights(
        token_embedding=_array(decoder.token_embedding.weight),
        positional=_array(decoder.positional_embedding),
        blocks=tuple(block(b) for b in blocks),
        ln=_norm(decoder.ln),
        n_head=blocks[0].attn.n_head,
    )


def _array(a: mx.array) -> NDArray[np.float32]:
    """A view of ``a`` (MLX arrays export their buffer), or a float32 copy if it is of another type."""
    return np.asarray(a, dtype=np.float32)


def _linear(layer: Any) -> cpu_kernels.Linear:
    return cpu_kernels.Linear(_array(layer.weight).T, _array(layer.bias) if "bias" in layer else None)


def _conv(layer: Any) -> cpu_kernels.Linear:
    """A convolution's out × taps × in weight as a (taps × in) × out matrix, for im2col."""
    weight = _array(layer.weight)
    return cpu_kernels.Linear(weight.reshape(weight.shape[0], -1).T, _array(layer.bias))


def _norm(layer: Any) -> cpu_kernels.LayerNorm:
    return cpu_kernels.LayerNorm(_array(layer.weight), _array(layer.bias))


class DecoderState:
    """Everything one batch of sequences carries between steps; rows follow the active sequences.

    ``explicit_cross``: the cross-attention as two matmuls and a softmax over K stored transposed, instead of
    ``mx.fast.scaled_dot_product_attention``: faster on the GPU at large batches (``docs/performance.md``), and the
    alignment heads' QK comes with it. ``fused``: the MLP's GELU as one compiled kernel (GPU). The CPU backend
    steps in numpy instead (``adapters/mlx/cpu_decoder.py``).
    """

    def __init__(
        self,
        model: Whisper,
        audio_features: mx.array,
        alignment_heads: Sequence[tuple[int, int]],
        explicit_cross: bool = False,
        fused: bool = False,
        transposed: dict[int, mx.array] | None = None,
    ) -> None:
        self.model = model
        self.explicit_cross = explicit_cross
        self.gelu = fused_gelu if fused else gelu
        blocks: list[ResidualAttentionBlock] = model.decoder.blocks
        self.n_head = blocks[0].attn.n_head
        self.offset = 0
        self.alignment_heads = list(alignment_heads)
        self.capture, self._reorder = capture_plan(alignment_heads)
        self._caches(audio_features)
        # ``transposed``: the model's own, made once (``KernelStep``); else made here for this batch
        self._transposed = transposed_once(linear_weights(model)) if transposed is None else transposed

    def _caches(self, audio_features: mx.array) -> None:
        """The cross-attention K/V (computed once per window, read every step) and the self-attention buffers."""
        blocks: list[ResidualAttentionBlock] = self.model.decoder.blocks
        self.cross_kv: list[tuple[mx.array, mx.array]] = []
        for block in blocks:
            cross = block.cross_attn
            assert cross is not None
            # contiguous once here, or every step would copy the transposed views again
            k = split_heads(cross.key(audio_features), self.n_head)
            k = mx.contiguous(k.transpose(0, 1, 3, 2) if self.explicit_cross else k)  # batch × heads × dh × frames
            v = mx.contiguous(split_heads(cross.value(audio_features), self.n_head))
            self.cross_kv.append((k, v))
        shape = (audio_features.shape[0], self.n_head, KV_BLOCK, self.model.dims.n_text_state // self.n_head)
        self.self_k = [mx.zeros(shape, dtype=audio_features.dtype) for _ in blocks]
        self.self_v = [mx.zeros(shape, dtype=audio_features.dtype) for _ in blocks]

    def _linear(self, layer: Any, x: mx.array) -> mx.array:
        """``layer(x)`` for an ``nn.Linear`` (or the embedding as the logits' linear) over its transposed weight."""
        weight = self._transposed[id(layer.weight)]
        return mx.addmm(layer.bias, x, weight) if "bias" in layer else x @ weight

    def keep(self, rows: mx.array) -> None:
        """Compact the batch to ``rows`` (indices of the sequences that go on)."""
        self.cross_kv = [(k[rows], v[rows]) for k, v in self.cross_kv]
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
        captured: list[mx.array] = []  # each capturing layer's QK (batch × its heads × frames), in layer order
        for layer, block in enumerate(model.decoder.blocks):
            x = self._layer(layer, block, x, start, end, mask, captured)
        self.offset = end
        picked = model.decoder.ln(x if length == 1 else x[:, list(logit_positions)])
        logits = self._linear(model.decoder.token_embedding, picked).astype(mx.float32)  # batch × positions × vocab
        attention = captured_attention(captured, self._reorder)
        if length == 1:
            return [logits[:, 0]] * len(logit_positions), attention
        return [logits[:, i] for i in range(len(logit_positions))], attention

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
        """One residual block over ``x``; its alignment heads' QK, if any, appended to ``captured``."""
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
        self.self_k[layer][:, :, start:end] = split_heads(self._linear(attn.key, x), self.n_head)
        self.self_v[layer][:, :, start:end] = split_heads(self._linear(attn.value, x), self.n_head)
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
            qk = None if heads is None else scores[:, :, -1, :][:, _head_index(heads)]
            return self._linear(attn.out, merge_heads(out)), qk
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
        if heads is None:
            return self._linear(attn.out, merge_heads(out)), None
        # the alignment heads' QK of the last query only: their K rows are read twice, every other head's once
        return self._linear(attn.out, merge_heads(out)), last_query_qk(q, k, heads, scale)


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


def capture_plan(alignment_heads: Sequence[tuple[int, int]]) -> tuple[dict[int, list[int]], mx.array | None]:
    """Each layer's heads whose QK is captured (ascending), and the order that takes the captures, layer by layer
    (sorted by layer and head), back to ``alignment_heads``' order (None: they are in it)."""
    capture: dict[int, list[int]] = {}
    for layer, head in sorted(alignment_heads):
        capture.setdefault(layer, []).append(head)
    ordered = sorted(alignment_heads)
    reorder = None if ordered == list(alignment_heads) else mx.array([ordered.index(h) for h in alignment_heads])
    return capture, reorder


def captured_attention(captured: list[mx.array], reorder: mx.array | None) -> mx.array:
    """The capturing layers' QK (each batch × its heads × frames, in layer order) as one batch × heads × frames,
    in the alignment heads' order."""
    attention = captured[0] if len(captured) == 1 else mx.concatenate(captured, axis=1)
    return attention if reorder is None else attention[:, reorder]


def last_query_qk(q: mx.array, k: mx.array, heads: list[int], scale: float) -> mx.array:
    """``heads``' scaled QK of the last query (q, k: batch × heads × length × dh): batch × len(heads) × keys."""
    index = _head_index(heads)
    return ((q[:, index, -1:, :] * scale) @ k[:, index].transpose(0, 1, 3, 2))[:, :, 0, :]


def _head_index(heads: list[int]) -> slice | mx.array:
    """The heads as a slice where they are consecutive (the usual case; large-v3: one a layer): views, no copy."""
    first, count = heads[0], len(heads)
    return slice(first, first + count) if heads == list(range(first, first + count)) else mx.array(heads)
