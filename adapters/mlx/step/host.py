"""The decoder step in numpy: the CPU backend's ``DecoderStep``.

A step at batch 16 is a few hundred small operations; in MLX each is a graph node, and every exchange with
numpy (the cross-attention and GELU run there: MLX's CPU ``exp``/``erf`` are slow) is a synchronisation. Here the
whole step is numpy over the model's own weights (views, no copies): per layer a layer norm, the self-attention
over a preallocated K/V cache written in place, the cross-attention over K (transposed) and V computed once per
window, and the MLP, each thread of a pool running every layer for its slice of the batch; then the logits as 2-D
matmuls, one slice of the vocabulary a thread. The captured alignment heads' QK of the last position come straight
from the cross-attention's scores (``docs/performance.md`` #32-#33, #45-#46).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx.cpu_kernels import LayerNorm, Linear, gelu, run_all, softmax_times
from onepass_whisper.adapters.mlx.step.common import KV_BLOCK, capture_plan, causal_mask, growth, row_masks


@frozen
class DecoderBlock:
    attn_ln: LayerNorm
    query: Linear
    key: Linear
    value: Linear
    out: Linear
    cross_ln: LayerNorm
    cross_query: Linear
    cross_key: Linear
    cross_value: Linear
    cross_out: Linear
    mlp_ln: LayerNorm
    mlp1: Linear
    mlp2: Linear


@frozen
class DecoderWeights:
    """Whisper's text decoder as numpy arrays (views of the model's weights)."""

    token_embedding: NDArray[np.float32]  # vocab × state; also the logits' matrix
    positional: NDArray[np.float32]  # text ctx × state
    blocks: tuple[DecoderBlock, ...]
    ln: LayerNorm
    n_head: int


class HostStep:
    """``DecoderStep`` in numpy over the model's own weights (``adapters/mlx/weights.py``); rows follow the active
    sequences."""

    def __init__(
        self,
        weights: DecoderWeights,
        audio_features: NDArray[np.float32],
        alignment_heads: Sequence[tuple[int, int]],
        pool: Executor | None = None,
        threads: int = 1,
    ) -> None:
        """``audio_features``: batch × audio frames × state (the encoder's output). ``pool``, of ``threads``
        threads, shares out the cross-attention's K/V projections (per window), each step's layers (per slice of
        the batch) and its logits (per slice of the vocabulary); numpy's BLAS should then run on one thread
        (``threadpoolctl``)."""
        self.weights = weights
        self._pool = pool
        self._parts = max(1, threads) if pool is not None else 1
        self.n_head = weights.n_head
        batch, frames, state = audio_features.shape
        self.dh = state // self.n_head
        self.scale = np.float32(self.dh**-0.5)
        shape = (batch, self.n_head, self.dh, frames)
        # batch × heads × dh × frames (K, transposed once here) and batch × heads × frames × dh (V)
        self.cross_k = [np.empty(shape, np.float32) for _ in weights.blocks]
        self.cross_v = [np.empty((batch, self.n_head, frames, self.dh), np.float32) for _ in weights.blocks]

        def project(window: int) -> None:
            features = audio_features[window]
            for layer, block in enumerate(weights.blocks):
                k = block.cross_key(features).reshape(frames, self.n_head, self.dh)
                v = block.cross_value(features).reshape(frames, self.n_head, self.dh)
                self.cross_k[layer][window] = k.transpose(1, 2, 0)
                self.cross_v[layer][window] = v.transpose(1, 0, 2)

        run_all(self._pool, project, range(batch))
        shape = (batch, self.n_head, KV_BLOCK, self.dh)
        self.self_k = [np.zeros(shape, np.float32) for _ in weights.blocks]
        self.self_v = [np.zeros(shape, np.float32) for _ in weights.blocks]
        # each slot's positions so far: equal until a row is refilled (``put``), then each row's own
        self.offsets = np.zeros(batch, np.int64)
        self.capture, _ = capture_plan(alignment_heads)  # layer -> heads whose QK is captured
        self.alignment_heads = list(alignment_heads)
        # the caches' slot of each row (the caller's order), a permutation of range(rows): None while the identity
        self._slots: NDArray[np.int64] | None = None

    def keep(self, rows: NDArray[np.integer]) -> None:
        """Compact the batch to ``rows`` (indices, ascending, of the sequences that go on).

        The caches are not gathered (that copied every remaining window's cross-attention K/V, 18 MB a window for
        tiny.en, at every compaction): each row that goes on keeps its slot, and only the rows in slots past the
        new batch size move into the freed slots below it; the caches become views of their first slots.
        """
        slots = np.arange(len(self.cross_k[0])) if self._slots is None else self._slots
        kept = slots[np.asarray(rows)]
        count = len(kept)
        movers = np.flatnonzero(kept >= count)
        free = np.setdiff1d(np.arange(count), kept)  # as many as movers, ascending
        for cache in (self.cross_k, self.cross_v, self.self_k, self.self_v):
            for i, buffer in enumerate(cache):
                if movers.size:
                    buffer[free] = buffer[kept[movers]]
                cache[i] = buffer[:count]
        if movers.size:
            self.offsets[free] = self.offsets[kept[movers]]
        self.offsets = self.offsets[:count]
        kept[movers] = free
        self._slots = None if np.array_equal(kept, np.arange(count)) else kept

    @property
    def offset(self) -> int:
        """The positions so far of the row furthest on (every row's, until a row is refilled)."""
        return int(self.offsets.max(initial=0))

    def put(self, rows: NDArray[np.integer], fresh: HostStep) -> None:
        """Rows ``rows`` (the caller's order) take ``fresh``'s sequences (one a row, in order, prompted, never
        compacted): their cross-attention K/V, their self-attention cache and their own positions from 0."""
        slots = np.asarray(rows) if self._slots is None else self._slots[np.asarray(rows)]
        end = fresh.offset
        self._reserve_to(end)
        for mine, theirs in ((self.cross_k, fresh.cross_k), (self.cross_v, fresh.cross_v)):
            for buffer, new in zip(mine, theirs):
                buffer[slots] = new
        for mine, theirs in ((self.self_k, fresh.self_k), (self.self_v, fresh.self_v)):
            for buffer, new in zip(mine, theirs):
                buffer[slots, :, :end] = new[:, :, :end]
        self.offsets[slots] = fresh.offsets

    def step(
        self, tokens: NDArray[np.integer], logit_positions: Sequence[int] = (-1,)
    ) -> tuple[list[NDArray[np.float32]], NDArray[np.float32]]:
        """Feed ``tokens`` (batch × length) and advance the cache.

        Returns the logits (batch × vocab) at each of ``logit_positions`` and the alignment heads' cross-attention
        QK of the last position (batch × alignment heads × audio frames), float32.

        Rows never meet before the logits, so each of the pool's threads runs every layer for its own slice of the
        batch (one hand-off a step, not one per operation: the layer norms, small linears and self-attention would
        otherwise leave a core idle for a third of the step); then the logits go by slices of the vocabulary.
        """
        weights = self.weights
        if self._slots is not None:  # the step runs in the caches' slot order; rows back in the caller's at the end
            tokens = tokens[np.argsort(self._slots)]
        batch, length = tokens.shape
        offsets = self.offsets
        start, end = int(offsets.min()), self.offset + length
        uniform = start + length == end
        if not uniform and length > 1:
            raise ValueError("a step of several tokens needs every row at the same position")
        self._reserve_to(end)
        if uniform:  # batch × length × state
            x = weights.token_embedding[tokens] + weights.positional[start:end]
            mask = causal_mask(length, start) if length > 1 else None
        else:  # each row at its own position: the keys past it masked
            x = weights.token_embedding[tokens] + weights.positional[offsets][:, None]
            mask = row_masks(offsets, end)
        frames = self.cross_k[0].shape[-1]
        attention = np.empty((batch, len(self.alignment_heads), frames), np.float32)
        column = {head: i for i, head in enumerate(self.alignment_heads)}

        def layers(rows: slice) -> None:
            h = x[rows]  # a view: the residual stream of these rows, updated in place
            for layer, block in enumerate(weights.blocks):
                h += self._self_attention(layer, block, block.attn_ln(h), rows, start, end, mask)
                y, qk = self._cross_attention(layer, block, block.cross_ln(h), rows)
                h += y
                if qk is not None:
                    for i, head in enumerate(self.capture[layer]):
                        attention[rows, column[(layer, head)]] = qk[:, i]
                h += block.mlp2(gelu(block.mlp1(block.mlp_ln(h))))

        run_all(self._pool, layers, _slices(batch, min(self._parts, batch)))
        self.offsets = offsets + length
        picked = weights.ln(x[:, list(logit_positions)])  # batch × positions × state
        logits = self._logits(picked.reshape(batch * len(logit_positions), -1)).reshape(batch, len(logit_positions), -1)
        if self._slots is not None:
            logits, attention = logits[self._slots], attention[self._slots]
        return [logits[:, i] for i in range(len(logit_positions))], attention

    def _logits(self, rows: NDArray[np.float32]) -> NDArray[np.float32]:
        """rows × state -> rows × vocab: 2-D matmuls (numpy runs a stacked one as a loop of matrix-vector
        products), one slice of the vocabulary a thread."""
        embedding = self.weights.token_embedding
        logits = np.empty((len(rows), len(embedding)), np.float32)

        def part(columns: slice) -> None:
            # vocabulary × rows, then transposed: OpenBLAS is up to 2x faster this way round for a few rows
            logits[:, columns] = np.matmul(embedding[columns], rows.T).T

        run_all(self._pool, part, _slices(len(embedding), self._parts))
        return logits

    def _reserve_to(self, end: int) -> None:
        """Room in the self-attention cache for ``end`` positions."""
        grow = growth(0, end, self.self_k[0].shape[2])
        if not grow:
            return
        for cache in (self.self_k, self.self_v):
            for i, buffer in enumerate(cache):
                pad = np.zeros((*buffer.shape[:2], grow, buffer.shape[3]), np.float32)
                cache[i] = np.concatenate([buffer, pad], axis=2)

    def _heads(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """batch × length × state -> batch × heads × length × dh (a view)."""
        batch, length, _ = x.shape
        result: NDArray[np.float32] = x.reshape(batch, length, self.n_head, self.dh).transpose(
            0, 2, 1, 3
        )  # a typed name: numpy's stubs give Any here for Python 3.10
        return result

    def _merge(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        batch, _, length, _ = x.shape
        result: NDArray[np.float32] = x.transpose(0, 2, 1, 3).reshape(
            batch, length, self.n_head * self.dh
        )  # a typed name: numpy's stubs give Any here for Python 3.10
        return result

    def _self_attention(
        self,
        layer: int,
        block: DecoderBlock,
        h: NDArray[np.float32],
        rows: slice,
        start: int,
        end: int,
        mask: NDArray[np.float32] | None,
    ) -> NDArray[np.float32]:
        """``start``..``end``: the positions of this step's tokens, or (rows at their own positions, one token)
        ``end`` the furthest row's end and ``mask`` each row's (rows × 1 × 1 × end)."""
        q = self._heads(block.query(h)) * self.scale
        keys, values = self.self_k[layer][rows], self.self_v[layer][rows]  # views of these rows' caches
        if mask is not None and mask.ndim == 4:
            mask = mask[rows]
            at = self.offsets[rows]
            keys[np.arange(len(at)), :, at] = self._heads(block.key(h))[:, :, 0]
            values[np.arange(len(at)), :, at] = self._heads(block.value(h))[:, :, 0]
        else:
            keys[:, :, start:end] = self._heads(block.key(h))
            values[:, :, start:end] = self._heads(block.value(h))
        scores: NDArray[np.float32] = np.matmul(q, keys[:, :, :end].swapaxes(-1, -2))  # … × end
        if mask is not None:
            scores += mask
        return block.out(self._merge(softmax_times(scores, values[:, :, :end])))

    def _cross_attention(
        self, layer: int, block: DecoderBlock, h: NDArray[np.float32], rows: slice
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """These rows' cross-attention output, and the captured heads' QK of the last position (rows × heads ×
        frames) if ``layer`` has any."""
        q = self._heads(block.cross_query(h)) * self.scale  # rows × heads × length × dh
        scores = np.matmul(q, self.cross_k[layer][rows])  # rows × heads × length × frames
        heads = self.capture.get(layer)
        qk = None if heads is None else scores[:, heads, -1, :]  # a copy, before the softmax overwrites them
        out = softmax_times(scores, self.cross_v[layer][rows])
        return block.cross_out(self._merge(out)), qk


def _slices(total: int, count: int) -> list[slice]:
    """``count`` consecutive slices of about equal size that cover ``range(total)``."""
    bounds = np.linspace(0, total, count + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
