"""The character-forcing pass (``char_forcing.py``) in numpy, for the CPU backend: as its decoder step
(``step/host.py``), MLX's CPU ``exp`` is scalar code, so the softmaxes over 1500 frames of several hundred
characters' rows dominated the MLX pass. Here each sequence runs alone on one of a pool's threads (numpy releases
the GIL in its loops and matmuls), numpy's BLAS on one thread meanwhile, over the model's own weights (views).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from onepass_whisper.adapters.mlx.cpu_kernels import gelu, run_all, softmax_times
from onepass_whisper.adapters.mlx.step.common import capture_plan, causal_mask
from onepass_whisper.adapters.mlx.step.host import DecoderWeights


class HostCharForcer:
    """Runs sequences through the decoder's layers up to the last that holds a wanted head, one a thread."""

    def __init__(self, weights: DecoderWeights, threads: int | None = None) -> None:
        self.weights = weights
        self._threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="chars")
        self._blas = ThreadpoolController()

    def rows(
        self,
        features: NDArray[np.float32],
        sequences: Sequence[Sequence[int]],
        windows: Sequence[int],
        prefix: Sequence[int],
        frames: Sequence[int],
        heads: Sequence[tuple[int, int]],
    ) -> list[NDArray[np.float32]]:
        """As ``char_forcing.forced_rows``: sequence ``i`` over ``features[windows[i]]`` (windows × audio ctx ×
        state), the raw QK of ``heads`` ((layer, head) pairs; heads × (tokens + 1) × ``frames[i]``) at the rows DTW
        reads."""
        wanted = [(int(layer), int(head)) for layer, head in heads]
        capture, _ = capture_plan(wanted)  # each layer's heads kept, the same for every sequence
        found: list[NDArray[np.float32]] = [np.empty(0, np.float32)] * len(sequences)

        def one(i: int) -> None:
            tokens = np.array([*prefix, *sequences[i]], np.int64)
            scores = self._scores(features[windows[i]], tokens, wanted, capture)  # heads × positions × audio ctx
            found[i] = np.ascontiguousarray(scores[:, len(prefix) - 1 :, : frames[i]])

        with self._blas.limit(limits=1, user_api="blas"):
            run_all(self._pool, one, range(len(sequences)))
        return found

    def _scores(
        self,
        features: NDArray[np.float32],
        tokens: NDArray[np.int64],
        wanted: Sequence[tuple[int, int]],
        capture: dict[int, list[int]],
    ) -> NDArray[np.float32]:
        weights = self.weights
        last = max(capture)
        heads = weights.n_head
        length = len(tokens)
        state = features.shape[-1]
        dh = state // heads
        scale = np.float32(dh**-0.5)

        def split(x: NDArray[np.float32]) -> NDArray[np.float32]:  # positions × state -> heads × positions × dh
            result: NDArray[np.float32] = x.reshape(len(x), heads, dh).transpose(1, 0, 2)
            return result

        def merge(x: NDArray[np.float32]) -> NDArray[np.float32]:  # heads × positions × dh -> positions × state
            result: NDArray[np.float32] = x.transpose(1, 0, 2).reshape(-1, state)
            return result

        x = weights.token_embedding[tokens] + weights.positional[:length]
        mask = causal_mask(length, 0)
        kept: dict[tuple[int, int], NDArray[np.float32]] = {}
        for layer in range(last + 1):
            block = weights.blocks[layer]
            h = block.attn_ln(x)
            q, k, v = split(block.query(h) * scale), split(block.key(h)), split(block.value(h))
            scores = np.matmul(q, k.swapaxes(-1, -2))
            scores += mask
            x = x + block.out(merge(softmax_times(scores, v)))
            h = block.cross_ln(x)
            q = split(block.cross_query(h) * scale)
            keys = split(block.cross_key(features)).swapaxes(-1, -2)  # heads × dh × audio ctx
            cross = np.matmul(q, keys)  # heads × positions × audio ctx
            for head in capture.get(layer, []):
                kept[(layer, head)] = cross[head].copy()  # before the softmax overwrites them
            if layer == last:
                break
            x = x + block.cross_out(merge(softmax_times(cross, split(block.cross_value(features)))))
            x = x + block.mlp2(gelu(block.mlp1(block.mlp_ln(x))))
        return np.stack([kept[head] for head in wanted])
