"""The CPU decoder step's cross-attention, three ways, side by side (tiny.en's shapes, random values).

    python -m benchmarks.cpu_cross_attention [--batch 16] [--repeats 3]

At batch 16 the cross-attention is ~30 of a step's ~40 ms: every step reads each window's K and V (4 layers ×
2 × 1500 × 384 float32: 18 MB a window) from memory at ~10 GB/s. Two ways to read fewer bytes, each against the
layout ``cpu_decoder.NumpyDecoderState`` uses (K transposed and V, per head, float32, batched matmuls):

- ``absorbed``: K and V never stored; the query is taken through the key weight per head (q·W_kᵀ) and multiplied
  with the window's features, and the softmax's weights with the features before the value weight. One 2.3 MB
  features array a window serves all four layers (the batch's ~37 MB nearly fits the 36 MB L3), at ``heads``
  times the arithmetic (6 for tiny.en).
- ``int8``: K quantised to 8 bits in groups of 64 (a quarter of the bytes), scored by MLX's ``gather_qmm`` (one
  call for all sequences and heads).

Prints ms per step for the four layers' scores and sums (``int8``: the scores alone), alternating, on both cores
(``current`` and ``absorbed``: numpy's BLAS on two threads; the decoder splits rows over two one-thread workers
instead, no faster here).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

import onepass_whisper.adapters.mlx  # noqa: F401  # the optimized BLAS before mlx loads
from onepass_whisper.adapters.mlx.cpu_kernels import softmax_times

FRAMES, STATE, HEADS, LAYERS = 1500, 384, 6, 4  # tiny.en
HEAD = STATE // HEADS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import mlx.core as mx

    rng = np.random.default_rng(0)
    batch = args.batch
    features = rng.normal(size=(batch, FRAMES, STATE)).astype(np.float32)
    w_k = [(0.05 * rng.normal(size=(STATE, STATE))).astype(np.float32) for _ in range(LAYERS)]
    w_v = [(0.05 * rng.normal(size=(STATE, STATE))).astype(np.float32) for _ in range(LAYERS)]
    b_v = [rng.normal(size=STATE).astype(np.float32) for _ in range(LAYERS)]
    keys = [
        np.ascontiguousarray((features @ w.T).reshape(batch, FRAMES, HEADS, HEAD).transpose(0, 2, 3, 1)) for w in w_k
    ]
    values = [
        np.ascontiguousarray((features @ w.T + b).reshape(batch, FRAMES, HEADS, HEAD).transpose(0, 2, 1, 3))
        for w, b in zip(w_v, b_v, strict=True)
    ]
    q = rng.normal(size=(batch, HEADS, 1, HEAD)).astype(np.float32)
    k_heads = [w.reshape(HEADS, HEAD, STATE) for w in w_k]
    v_heads = [w.reshape(HEADS, HEAD, STATE) for w in w_v]
    features_t = features.transpose(0, 2, 1)

    def current(layer: int) -> NDArray[np.float32]:
        return softmax_times(np.matmul(q, keys[layer]), values[layer])[:, :, 0]  # the decoder's own

    def absorbed(layer: int) -> NDArray[np.float32]:
        query = np.einsum("bhd,hds->bhs", q[:, :, 0], k_heads[layer])
        summed = softmax_times(np.matmul(query, features_t), features)  # batch × heads × state
        out: NDArray[np.float32] = np.einsum("bhs,hds->bhd", summed, v_heads[layer]) + b_v[layer].reshape(HEADS, HEAD)
        return out

    for layer in range(LAYERS):
        np.testing.assert_allclose(absorbed(layer), current(layer), atol=1e-3)
    quantised = []
    for layer in range(LAYERS):
        packed = mx.quantize(mx.array(keys[layer].transpose(0, 1, 3, 2).reshape(-1, FRAMES, HEAD)), 64, 8)
        mx.eval(packed)
        quantised.append(packed)
    index = mx.arange(batch * HEADS)
    q_mx = mx.array(q.reshape(-1, 1, HEAD))

    def int8_scores(layer: int) -> None:
        weights, scales, biases = quantised[layer]
        mx.eval(mx.gather_qmm(q_mx, weights, scales, biases, rhs_indices=index, transpose=True, group_size=64, bits=8))

    variants: dict[str, Callable[[int], object]] = {"current": current, "absorbed": absorbed, "int8": int8_scores}
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            for _ in range(10):
                for layer in range(LAYERS):
                    run(layer)
            timings[name].append(round((time.perf_counter() - start) * 100, 2))  # ms a step (10 steps)
    print(json.dumps({"batch": batch, "ms_per_step": timings}))


if __name__ == "__main__":
    main()
