"""Whisper's text decoder run step by step over a batch, with a per-sequence KV cache and attention capture.

mlx-whisper's ``TextDecoder`` already returns the cross-attention QK of every layer, but its batch inference throws
it away, grows the self-attention cache by concatenation and computes every head's QK. Here the self-attention K/V
live in a preallocated buffer written in place, the cross-attention K/V are computed once per window, and the QK
is kept only for the alignment heads' layers (and only its last query row), so word timing needs no second pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import mlx.core as mx
import numpy as np
from numpy.typing import NDArray
from mlx_whisper.whisper import MultiHeadAttention, ResidualAttentionBlock, Whisper

from adapters.mlx import cpu_kernels

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
        q = _split_heads(attn.query(h), attn.n_head)
        k = _split_heads(attn.key(h), attn.n_head)
        v = _split_heads(attn.value(h), attn.n_head)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5)
        x = x + attn.out(_merge_heads(out))
        x = x + block.mlp2(fused_gelu(block.mlp1(block.mlp_ln(x))))
    result: mx.array = encoder.ln_post(x)
    return result


def encoder_weights(model: Whisper) -> cpu_kernels.EncoderWeights:
    """The model's audio encoder as numpy views of its weights (float32 on the CPU backend: no copies)."""
    encoder = model.encoder

    def array(a: mx.array) -> NDArray[np.float32]:
        return np.asarray(a, dtype=np.float32)

    def linear(layer: Any) -> cpu_kernels.Linear:
        bias = array(layer.bias) if "bias" in layer else None
        return cpu_kernels.Linear(array(layer.weight).T, bias)

    def conv(layer: Any) -> cpu_kernels.Linear:  # out × taps × in -> (taps × in) × out
        weight = array(layer.weight)
        return cpu_kernels.Linear(weight.reshape(weight.shape[0], -1).T, array(layer.bias))

    def norm(layer: Any) -> cpu_kernels.LayerNorm:
        return cpu_kernels.LayerNorm(array(layer.weight), array(layer.bias))

    blocks: list[ResidualAttentionBlock] = encoder.blocks
    return cpu_kernels.EncoderWeights(
        conv1=conv(encoder.conv1),
        conv2=conv(encoder.conv2),
        positional=array(encoder._positional_embedding),
        blocks=tuple(
            cpu_kernels.EncoderBlock(
                attn_ln=norm(b.attn_ln),
                query=linear(b.attn.query),
                key=linear(b.attn.key),
                value=linear(b.attn.value),
                out=linear(b.attn.out),
                mlp_ln=norm(b.mlp_ln),
                mlp1=linear(b.mlp1),
                mlp2=linear(b.mlp2),
            )
            for b in blocks
        ),
        ln_post=norm(encoder.ln_post),
        n_head=blocks[0].attn.n_head,
    )


def _host_gelu(x: mx.array) -> mx.array:
    """The exact GELU, computed in numpy (``cpu_kernels.gelu``)."""
    return mx.array(cpu_kernels.gelu(np.array(x, dtype=np.float32))).astype(x.dtype)


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
        self.gelu = fused_gelu if fused else _host_gelu if host_cross else gelu
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
            # the token embedding, read in place (MLX arrays export their buffer), for host_step's logits
            self._host_embedding = np.asarray(model.decoder.token_embedding.weight, dtype=np.float32)
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
        assert not self.host_cross, "the CPU flavour steps with host_step"
        hidden, captured = self._forward(tokens, logit_positions)
        logits = self.model.decoder.token_embedding.as_linear(hidden).astype(mx.float32)  # batch × positions × vocab
        attention = mx.stack([captured[h] for h in self.alignment_heads], axis=1)
        return [logits[:, i] for i in range(len(logit_positions))], attention

    def host_step(
        self, tokens: mx.array, logit_positions: Sequence[int] = (-1,)
    ) -> tuple[list[NDArray[np.float32]], NDArray[np.float32]]:
        """``step`` for the CPU flavour (``host_cross``), its results as numpy arrays (attention in float32).

        The logits' matmul (batch × state by state × vocab: 80 MB of weights for tiny) runs in numpy, whose BLAS
        uses every core, while MLX's stays on one for the step's small matmuls (``adapters/mlx/blas.py``).
        """
        assert self.host_cross, "the GPU flavour steps with step"
        hidden, captured = self._forward(tokens, logit_positions)
        logits = self._logits(hidden)  # batch × positions × vocab
        attention = np.stack([captured[h] for h in self.alignment_heads], axis=1).astype(np.float32, copy=False)
        return [logits[:, i] for i in range(len(logit_positions))], attention

    def _logits(self, hidden: mx.array) -> NDArray[np.float32]:
        """batch × positions × state -> batch × positions × vocab, as one 2-D matmul (numpy runs a 3-D one as a
        loop of matrix-vector products)."""
        batch, positions, state = hidden.shape
        flat = np.array(hidden, dtype=np.float32).reshape(batch * positions, state)
        logits: NDArray[np.float32] = (flat @ self._host_embedding.T).reshape(batch, positions, -1)
        return logits

    def _forward(self, tokens: mx.array, logit_positions: Sequence[int]) -> tuple[mx.array, dict[tuple[int, int], Any]]:
        """The blocks over ``tokens``: the final layer norm's output at ``logit_positions`` (batch × positions ×
        state) and each alignment head's QK of the last position (batch × frames; numpy arrays on the host)."""
        model = self.model
        length = tokens.shape[1]
        self._reserve(length)
        start, end = self.offset, self.offset + length
        x = model.decoder.token_embedding(tokens) + model.decoder.positional_embedding[start:end]
        mask = causal_mask(length, start, x.dtype) if length > 1 else None
        captured: dict[tuple[int, int], Any] = {}
        for layer, block in enumerate(model.decoder.blocks):
            x = x + self._self_attention(layer, block.attn, block.attn_ln(x), start, end, mask)
            cross = block.cross_attn
            assert cross is not None and block.cross_attn_ln is not None
            qk: mx.array | NDArray[np.float32] | None
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
        hidden: mx.array = model.decoder.ln(x[:, list(logit_positions)])
        return hidden, captured

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
    ) -> tuple[mx.array, NDArray[np.float32] | None]:
        """``_cross_attention`` in numpy; the QK of the alignment heads' last query comes from the scores."""
        k, v = self.host_kv[layer]  # batch × heads × dh × frames, batch × heads × frames × dh
        q = np.array(_split_heads(attn.query(x), self.n_head), dtype=np.float32)  # batch × heads × length × dh
        q *= np.float32(q.shape[-1] ** -0.5)
        scores = np.matmul(q, k)  # batch × heads × length × frames
        heads = self.capture.get(layer)
        qk = None if heads is None else scores[:, heads, -1, :]  # a copy (fancy indexing), before the scores are overwritten
        out = cpu_kernels.softmax_times(scores, v)
        return attn.out(_merge_heads(mx.array(out).astype(x.dtype))), qk


def _head_index(heads: list[int]) -> slice | mx.array:
    """The heads as a slice where they are consecutive (the usual case; large-v3: one a layer): views, no copy."""
    first, count = heads[0], len(heads)
    return slice(first, first + count) if heads == list(range(first, first + count)) else mx.array(heads)
