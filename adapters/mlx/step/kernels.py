"""The decoder step on MLX's CUDA backend: a one-token step as a pure function over custom kernels, compiled.

``graph.GraphStep`` runs a step as ~38 graph nodes a layer; MLX evaluates and launches each one, and on CUDA the
step is host-bound on that (``docs/performance.md`` #22, #54, #58). ``KernelProgram`` runs a layer as 8 nodes at
few rows (``cuda_kernels``: the two attentions, and the linears with their layer norms, bias, GELU and residual),
and ``mx.compile`` replays its graph; ``KernelStep`` keeps the caches where those kernels read and write them. The
prompt (several tokens) still goes through MLX's own matmuls and attention (``graph.run_tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import mlx.core as mx
import numpy as np
from mlx_whisper.whisper import ResidualAttentionBlock, Whisper

from onepass_whisper.adapters.mlx import cuda_kernels
from onepass_whisper.adapters.mlx.step.common import (
    KV_BLOCK,
    capture_plan,
    captured_attention,
    fused_gelu,
    growth,
    last_query_qk,
    linear_weights,
    merge_heads,
    split_heads,
    transposed_once,
)
from onepass_whisper.adapters.mlx.step.graph import run_tokens


class StepKernels(Protocol):
    """What ``KernelProgram`` needs of its kernels: ``cuda_kernels`` (a module) on CUDA; MLX-op equivalents in the
    tests, to run the same step on the CPU."""

    def linear_fits(self, x: mx.array, weight: mx.array) -> bool: ...

    def split_count(self, out_features: int, in_features: int) -> int: ...

    def linear(
        self,
        x: mx.array,
        weight: mx.array,
        bias: mx.array | None = ...,
        gelu: bool = ...,
        residual: mx.array | None = ...,
        norm: tuple[mx.array, mx.array, float] | None = ...,
        counters: mx.array | None = ...,
    ) -> mx.array: ...

    def self_attention(
        self, qkv: mx.array, cache: mx.array, positions: mx.array, n_head: int, max_positions: int
    ) -> tuple[mx.array, mx.array]: ...

    def cross_attention(
        self,
        q: mx.array,
        k: mx.array,
        v: mx.array,
        n_head: int,
        heads: tuple[int, ...] = ...,
        counters: mx.array | None = ...,
    ) -> tuple[mx.array, mx.array | None]: ...


class KernelProgram:
    """A model's one-token decoder step on MLX's CUDA backend, built once per model: a layer is 8 graph nodes at
    few rows (``cuda_kernels.LINEAR_KERNEL_MAX_ROWS``), 15 above (MLX's matmuls, layer norms and adds).

    On CUDA the step is host-bound on MLX's evaluation of each node, and a matmul (cuBLAS) costs several times the
    host time of a custom kernel, itself more than an elementwise one (the numbers: ``docs/performance.md``
    #60-#62). So:

    - the two attentions are custom kernels (``cuda_kernels.self_attention``, ``cross_attention``), a node each;
    - the linears are ``cuda_kernels.linear`` (tensor cores) with the layer norm before them, the bias, the MLP's
      GELU and the residual add done in the same kernel; the self-attention's query, key and value are one linear.

    The step is a pure function of its operands (the tokens, their position as an array, the caches), so that it
    can be ``mx.compile``d: traced once per batch size and cache capacity, its graph is then replayed without the
    Python that builds it (the trace's cost and the time saved a step: ``docs/performance.md`` #77-#78). The
    self-attention kernel writes each step's key and value into the cache in place (``cuda_kernels``: MLX's own
    dynamic slice update copied the layer's whole cache, ``docs/performance.md`` #77). ``kernels``: the module of the four kernels
    (``cuda_kernels``; the tests give MLX-op equivalents, ``tests/integration/kernel_reference.py``, to run on the
    CPU). ``split_cross``: at few sequences the cross-attention splits each head's frames over several blocks
    (``cuda_kernels.cross_split_count``); False keeps one block a head, to measure the split against.
    """

    def __init__(
        self,
        model: Whisper,
        alignment_heads: Sequence[tuple[int, int]],
        compiled: bool = True,
        kernels: StepKernels = cuda_kernels,
        split_cross: bool = True,
    ) -> None:
        self.model = model
        self.kernels = kernels
        blocks: list[ResidualAttentionBlock] = model.decoder.blocks
        self.n_head = blocks[0].attn.n_head
        self.capture, reorder = capture_plan(alignment_heads)
        self.reorder = None if reorder is None else mx.array(reorder)
        # each layer's query, key and value weights side by side (out × in, as nn.Linear; the key has no bias)
        self.qkv: list[tuple[mx.array, mx.array]] = []
        for block in blocks:
            query, key, value = block.attn.query, block.attn.key, block.attn.value
            weight = mx.concatenate([query.weight, key.weight, value.weight])
            bias = mx.concatenate([query.bias, mx.zeros_like(value.bias), value.bias])
            self.qkv.append((weight, bias))
        mx.eval(self.qkv)
        weights = linear_weights(model)  # the logits' first, then each layer's query, key, value and the others
        qkv_weights = [weight for weight, _ in self.qkv]
        # for MLX's matmuls above the kernel's rows and in the prompt (``DecoderState``'s, and the query, key and
        # value weights side by side)
        self.transposed = transposed_once(weights + qkv_weights)
        # the split-K tickets of each weight the linear kernel takes and splits (``cuda_kernels.linear``): zero,
        # and left zero by every launch
        separate = {id(w) for b in blocks for w in (b.attn.query.weight, b.attn.key.weight, b.attn.value.weight)}
        self.counters = {
            id(weight): mx.zeros((weight.shape[0] // 16,), dtype=mx.uint32)
            for weight in weights[1:] + qkv_weights
            if id(weight) not in separate and kernels.split_count(*weight.shape) > 1
        }
        # the cross-attention's tickets where few sequences have each head's frames split over several blocks
        # (``cuda_kernels.cross_attention``); None: never split
        self.cross_counters = mx.zeros((cuda_kernels.CROSS_SPLIT_PAIRS,), dtype=mx.uint32) if split_cross else None
        mx.eval(list(self.counters.values()) + ([self.cross_counters] if split_cross else []))
        self.run = mx.compile(self.forward) if compiled else self.forward

    def project(
        self,
        x: mx.array,
        weight: mx.array,
        bias: mx.array | None,
        gelu: bool = False,
        residual: mx.array | None = None,
        norm: Any = None,
    ) -> mx.array:
        """``residual + gelu?(norm?(x) · weightᵀ + bias)``, ``norm`` a layer norm (``nn.LayerNorm``) or None: one
        kernel for a one-token step's few rows, the layer norm in it too; MLX's ops else."""
        if x.shape[1] == 1 and self.kernels.linear_fits(x, weight):
            normed = None if norm is None else (norm.weight, norm.bias, norm.eps)
            return self.kernels.linear(x, weight, bias, gelu, residual, normed, self.counters.get(id(weight)))
        if norm is not None:
            x = norm(x)
        transposed = self.transposed[id(weight)]
        y = x @ transposed if bias is None else mx.addmm(bias, x, transposed)
        y = fused_gelu(y) if gelu else y
        return y if residual is None else residual + y

    def forward(
        self,
        tokens: mx.array,
        offset: mx.array,
        self_kv: list[mx.array],
        cross_kv: list[tuple[mx.array, mx.array]],
    ) -> tuple[mx.array, mx.array, list[mx.array]]:
        """One token a sequence (``tokens``: batch × 1), each at its own position ``offset`` (int32, one a row:
        equal but where rows were refilled at different times).

        ``self_kv``: each layer's self-attention buffer (batch × capacity × 2·state: a position's key, then its
        value), ``cross_kv``: each layer's cross-attention K and V (batch × frames × state). Returns the logits
        (batch × vocab, float32), the alignment heads' cross-attention QK (batch × heads × frames, in
        ``alignment_heads``' order) and the buffers with this position written.
        """
        model, kernels = self.model, self.kernels
        decoder = model.decoder
        positions = offset + 1  # the positions the self-attention sees, this one included
        x = decoder.token_embedding(tokens) + mx.take(decoder.positional_embedding, offset, axis=0)[:, None]
        captured: list[mx.array] = []  # each capturing layer's QK (batch × its heads × frames), in layer order
        written: list[mx.array] = []
        blocks: list[ResidualAttentionBlock] = decoder.blocks
        for layer, block in enumerate(blocks):
            weight, bias = self.qkv[layer]
            qkv = self.project(x, weight, bias, norm=block.attn_ln)
            out, cache = kernels.self_attention(qkv, self_kv[layer], positions, self.n_head, model.dims.n_text_ctx)
            written.append(cache)
            x = self.project(out, block.attn.out.weight, block.attn.out.bias, residual=x)
            cross = block.cross_attn
            assert cross is not None and block.cross_attn_ln is not None
            k, v = cross_kv[layer]
            q = self.project(x, cross.query.weight, cross.query.bias, norm=block.cross_attn_ln)
            heads = tuple(self.capture.get(layer, []))
            out, qk = kernels.cross_attention(q, k, v, self.n_head, heads, self.cross_counters)
            if qk is not None:
                captured.append(qk)
            x = self.project(out, cross.out.weight, cross.out.bias, residual=x)
            hidden = self.project(x, block.mlp1.weight, block.mlp1.bias, gelu=True, norm=block.mlp_ln)
            x = self.project(hidden, block.mlp2.weight, block.mlp2.bias, residual=x)
        logits = self.project(decoder.ln(x), decoder.token_embedding.weight, None)
        return logits[:, 0].astype(mx.float32), captured_attention(captured, self.reorder), written


class KernelStep:
    """``DecoderStep`` on MLX's CUDA backend: its one-token steps are a ``KernelProgram``'s (8 graph nodes a layer
    instead of ~38 at few rows, compiled); the program is the model's, shared by every batch.

    The caches are kept where the linears write them, position-major, so no head is split or merged: each layer's
    cross-attention K and V as batch × frames × state, and one self-attention buffer of batch × capacity ×
    2·state (a position's key, then its value) that the last two thirds of the query-key-value linear fill. A step
    of several tokens (the prompt) runs MLX's own matmuls and attention over views of the same buffers.
    """

    def __init__(self, model: Whisper, audio_features: mx.array, program: KernelProgram) -> None:
        self.model = model
        self.program = program
        self.n_head = program.n_head
        # each row's positions so far: equal until a row is refilled (``put``), then each row's own
        self.offsets = np.zeros(audio_features.shape[0], np.int64)
        blocks: list[ResidualAttentionBlock] = model.decoder.blocks
        self.cross_kv: list[tuple[mx.array, mx.array]] = []
        for block in blocks:
            cross = block.cross_attn
            assert cross is not None
            self.cross_kv.append((cross.key(audio_features), cross.value(audio_features)))  # batch × frames × state
        shape = (audio_features.shape[0], KV_BLOCK, 2 * model.dims.n_text_state)
        self.self_kv = [mx.zeros(shape, dtype=audio_features.dtype) for _ in blocks]

    @property
    def offset(self) -> int:
        """The positions so far of the row furthest on (every row's, until a row is refilled)."""
        return int(self.offsets.max(initial=0))

    def keep(self, rows: mx.array) -> None:
        self.cross_kv = [(k[rows], v[rows]) for k, v in self.cross_kv]
        self.self_kv = [kv[rows] for kv in self.self_kv]
        self.offsets = self.offsets[np.array(rows)]

    def put(self, rows: mx.array, fresh: KernelStep) -> None:
        """Rows ``rows`` take ``fresh``'s sequences (one a row, in order, prompted): their cross-attention K/V,
        their self-attention cache and their own positions from 0. The buffers become new arrays that the step
        alone holds, as the self-attention kernel's in-place write needs (``cuda_kernels._SELF``)."""
        end = fresh.offset
        self._reserve(end - self.offset)
        for (k, v), (new_k, new_v) in zip(self.cross_kv, fresh.cross_kv):
            k[rows] = new_k
            v[rows] = new_v
        for buffer, new in zip(self.self_kv, fresh.self_kv):
            buffer[rows, :end] = new[:, :end]
        self.offsets[np.array(rows)] = fresh.offsets

    def _reserve(self, length: int) -> None:
        grow = growth(self.offset, length, self.self_kv[0].shape[1])
        if not grow:
            return
        for i, kv in enumerate(self.self_kv):
            pad = mx.zeros((kv.shape[0], grow, kv.shape[2]), dtype=kv.dtype)
            self.self_kv[i] = mx.concatenate([kv, pad], axis=1)

    def step(self, tokens: mx.array, logit_positions: Sequence[int] = (-1,)) -> tuple[list[mx.array], mx.array]:
        self._reserve(tokens.shape[1])
        if tokens.shape[1] > 1:
            if len(self.offsets) and not (self.offsets == self.offsets[0]).all():
                raise ValueError("a step of several tokens needs every row at the same position")
            program, embedding = self.program, self.model.decoder.token_embedding
            result = run_tokens(
                self.model,
                tokens,
                self.offset,
                logit_positions,
                self._prompt_layer,
                lambda x: x @ program.transposed[id(embedding.weight)],
                program.reorder,
            )
            self.offsets = self.offsets + tokens.shape[1]
            return result
        offset = mx.array(self.offsets.astype(np.int32))
        logits, attention, self.self_kv = self.program.run(tokens, offset, self.self_kv, self.cross_kv)
        self.offsets = self.offsets + 1
        return [logits] * len(logit_positions), attention

    def _prompt_layer(
        self,
        layer: int,
        block: ResidualAttentionBlock,
        x: mx.array,
        start: int,
        end: int,
        mask: mx.array | None,
        captured: list[mx.array],
    ) -> mx.array:
        """A step of several tokens (the prompt): MLX's matmuls and attention over the position-major buffers."""
        project = self.program.project
        weight, bias = self.program.qkv[layer]
        qkv = project(x, weight, bias, norm=block.attn_ln)
        state = qkv.shape[-1] // 3
        self.self_kv[layer][:, start:end] = qkv[:, :, state:]
        cache = self.self_kv[layer]
        q = split_heads(qkv[:, :, :state], self.n_head)
        k = split_heads(cache[:, :end, :state], self.n_head)
        v = split_heads(cache[:, :end, state:], self.n_head)
        out = merge_heads(mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5, mask=mask))
        x = project(out, block.attn.out.weight, block.attn.out.bias, residual=x)
        cross = block.cross_attn
        assert cross is not None and block.cross_attn_ln is not None
        k, v = self.cross_kv[layer]
        q = project(x, cross.query.weight, cross.query.bias, norm=block.cross_attn_ln)
        heads = self.program.capture.get(layer, [])
        q, k, v = (split_heads(a, self.n_head) for a in (q, k, v))
        scale = q.shape[-1] ** -0.5
        out = merge_heads(mx.fast.scaled_dot_product_attention(q, k, v, scale=scale))
        if heads:
            captured.append(last_query_qk(q, k, heads, scale))
        x = project(out, cross.out.weight, cross.out.bias, residual=x)
        hidden = project(x, block.mlp1.weight, block.mlp1.bias, gelu=True, norm=block.mlp_ln)
        return project(hidden, block.mlp2.weight, block.mlp2.bias, residual=x)
