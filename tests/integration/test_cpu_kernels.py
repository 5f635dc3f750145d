"""The CPU backend's numpy kernels against plain formulas: the GELU to float32 precision, the blocked attention
exactly as the one-matmul softmax attention, whatever the block boundaries and threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import special

from onepass_whisper.adapters.mlx import cpu_kernels


def exact_gelu(x: NDArray[np.float32]) -> NDArray[np.float64]:
    wide = x.astype(np.float64)
    result: NDArray[np.float64] = wide * (1 + special.erf(wide / np.sqrt(2))) / 2
    return result


@given(
    values=st.lists(st.floats(-1e4, 1e4, width=32, allow_subnormal=False), min_size=1, max_size=200),
    size=st.sampled_from([1, 7, cpu_kernels.GELU_BLOCK - 1, cpu_kernels.GELU_BLOCK + 3]),
)
def test_gelu_matches_the_exact_gelu_to_float32_precision(values: list[float], size: int) -> None:
    x = np.resize(np.array(values, np.float32), size)  # sizes across the block boundary, values repeated
    y = cpu_kernels.gelu(x.reshape(-1, 1) if size % 2 else x)
    assert y.dtype == np.float32 and y.size == size
    np.testing.assert_allclose(y.reshape(-1), exact_gelu(x), rtol=2e-6, atol=2e-6)


def test_gelu_keeps_the_shape_and_leaves_its_input_alone() -> None:
    x = np.linspace(-6, 6, 2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    before = x.copy()
    assert cpu_kernels.gelu(x).shape == (2, 3, 5)
    np.testing.assert_array_equal(x, before)


def naive_attention(q: NDArray[np.float32], k: NDArray[np.float32], v: NDArray[np.float32]) -> NDArray[np.float64]:
    scores = q.astype(np.float64) @ k.astype(np.float64).swapaxes(-1, -2)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    result: NDArray[np.float64] = (weights / weights.sum(axis=-1, keepdims=True)) @ v
    return result


@pytest.mark.parametrize("frames", [1, 5, cpu_kernels.ATTENTION_ROWS, cpu_kernels.ATTENTION_ROWS * 2 + 3])
@pytest.mark.parametrize("threads", [0, 2])
def test_blocked_attention_equals_softmax_attention(frames: int, threads: int) -> None:
    rng = np.random.default_rng(frames)
    q, k, v = (rng.standard_normal((2, 3, frames, 8)).astype(np.float32) * 2 for _ in range(3))
    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        out = cpu_kernels.attention(q, k, v, pool)
    finally:
        if pool is not None:
            pool.shutdown()
    assert out.shape == q.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, naive_attention(q, k, v), rtol=1e-4, atol=1e-5)


def test_softmax_times_survives_large_scores() -> None:
    scores = np.array([[1e4, 1e4 - 1.0, -1e4]], np.float32)  # exp would overflow without the max taken off
    v = np.eye(3, dtype=np.float32)
    out = cpu_kernels.softmax_times(scores.copy(), v)
    np.testing.assert_allclose(out, [[1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0.0]], rtol=1e-6)


def _random_encoder(
    rng: np.random.Generator, mels: int, state: int, heads: int, layers: int, frames: int
) -> cpu_kernels.EncoderWeights:
    def linear(n_in: int, n_out: int, bias: bool = True) -> cpu_kernels.Linear:
        weight = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        return cpu_kernels.Linear(weight.T, rng.standard_normal(n_out).astype(np.float32) if bias else None)

    def norm() -> cpu_kernels.LayerNorm:
        scale = (1 + rng.standard_normal(state) / 10).astype(np.float32)
        return cpu_kernels.LayerNorm(scale, np.zeros(state, np.float32))

    def block() -> cpu_kernels.EncoderBlock:
        return cpu_kernels.EncoderBlock(
            norm(), linear(state, state), linear(state, state, bias=False), linear(state, state), linear(state, state),
            norm(), linear(state, 4 * state), linear(4 * state, state),
        )  # fmt: skip

    return cpu_kernels.EncoderWeights(
        conv1=linear(3 * mels, state), conv2=linear(3 * state, state),
        positional=rng.standard_normal((frames, state)).astype(np.float32),
        blocks=tuple(block() for _ in range(layers)), ln_post=norm(), n_head=heads,
    )  # fmt: skip


def test_encoder_gives_the_same_features_on_threads_as_in_one() -> None:
    # row blocks and heads shared out among threads: the same arithmetic, block for block
    rng = np.random.default_rng(0)
    frames = cpu_kernels.ROW_BLOCK + 5  # output frames: the last row block is a partial one
    weights = _random_encoder(rng, mels=6, state=16, heads=4, layers=2, frames=frames)
    mels = rng.standard_normal((3, 2 * frames, 6)).astype(np.float32)
    alone = cpu_kernels.encode(weights, mels)
    with ThreadPoolExecutor(2) as pool:
        shared = cpu_kernels.encode(weights, mels, pool)
    assert alone.shape == (3, frames, 16)
    np.testing.assert_array_equal(alone, shared)
    assert np.isfinite(alone).all()
