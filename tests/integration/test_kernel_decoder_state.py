"""``KernelStep`` (MLX's CUDA backend: position-major caches, custom attention kernels) gives what
``GraphStep`` gives: the same logits and captured attention, through the prompt, one-token steps (compiled or
not), the cache's growth and the batch's compaction. Its prompt step runs everywhere; its one-token steps run
everywhere over MLX-op equivalents of the kernels (``kernel_reference``), and over the CUDA kernels there."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_whisper.whisper import ModelDimensions, Whisper

from onepass_whisper.adapters.mlx.step import DecoderStep
from onepass_whisper.adapters.mlx.step.graph import GraphStep
from onepass_whisper.adapters.mlx.step.kernels import KernelProgram, KernelStep
from tests.integration import kernel_reference

DIMS = ModelDimensions(
    n_mels=80,
    n_audio_ctx=1500,
    n_audio_state=384,
    n_audio_head=6,
    n_audio_layer=1,
    n_vocab=51864,
    n_text_ctx=448,
    n_text_state=384,
    n_text_head=6,
    n_text_layer=4,
)
HEADS = [(3, 4), (2, 1), (3, 0), (2, 3)]  # out of order across and within layers: the capture order must not leak
PROMPT = [50257, 50362, 50363]
# float32 matmuls on CUDA run in TF32 (and cuBLAS picks its algorithm by shape): the key and value linears as one
# then differ from two in the third decimal; on the CPU the two flavours agree to rounding
PROMPT_ATOL = 5e-3 if mx.cuda.is_available() else 1e-4


def _model(dtype: mx.Dtype) -> Whisper:
    mx.random.seed(3)
    model = Whisper(DIMS, dtype=dtype)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


def _run(state: DecoderStep[mx.array], steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The prompt, then ``steps`` one-token steps of fixed tokens; rows 0 and 2 of 3 kept after two."""
    logits, attention = state.step(mx.array([PROMPT] * 3), logit_positions=(0, -1))
    out = [(np.array(logits[0]), np.array(attention)), (np.array(logits[1]), np.array(attention))]
    tokens = np.random.default_rng(5).integers(0, 50257, (3, 80))[:, :steps]  # the same first steps for any count
    for step in range(steps):
        if step == 2:
            state.keep(mx.array([0, 2]))
            tokens = tokens[[0, 2]]
        (logits_step,), attention = state.step(mx.array(tokens[:, step : step + 1]))
        out.append((np.array(logits_step), np.array(attention)))
    return out


def _features(dtype: mx.Dtype) -> mx.array:
    return mx.random.normal((3, DIMS.n_audio_ctx, DIMS.n_audio_state), key=mx.random.key(4)).astype(dtype)


def test_the_prompt_step_equals_decoder_states() -> None:
    model = _model(mx.float32)
    features = _features(mx.float32)
    reference = GraphStep(model, features, HEADS)
    logits, attention = reference.step(mx.array([PROMPT] * 3), logit_positions=(0, -1))
    kernels = KernelStep(model, features, KernelProgram(model, HEADS))
    their_logits, their_attention = kernels.step(mx.array([PROMPT] * 3), logit_positions=(0, -1))
    assert their_attention.shape == (3, len(HEADS), DIMS.n_audio_ctx)
    for ours, theirs in zip(logits, their_logits, strict=True):
        np.testing.assert_allclose(np.array(theirs), np.array(ours), atol=PROMPT_ATOL)
    np.testing.assert_allclose(np.array(their_attention), np.array(attention), atol=PROMPT_ATOL)


@pytest.mark.parametrize("compiled", [True, False])
def test_one_token_steps_over_the_kernels_ops_equal_decoder_states(compiled: bool) -> None:
    """The step's plumbing on any backend: positions as arrays, the buffers written and grown, rows compacted,
    and the compiled step traced again for each new batch size and capacity."""
    model = _model(mx.float32)
    features = _features(mx.float32)
    program = KernelProgram(model, HEADS, compiled=compiled, kernels=kernel_reference)
    expected = _run(GraphStep(model, features, HEADS), steps=70)  # past the cache's first 64 positions
    got = _run(KernelStep(model, features, program), steps=70)
    again = _run(KernelStep(model, features, program), steps=3)  # a second batch, the same traces
    for (logits, attention), (their_logits, their_attention) in zip(expected, got, strict=True):
        np.testing.assert_allclose(their_logits, logits, atol=1e-3 * max(1.0, float(np.abs(logits).max())))
        np.testing.assert_allclose(their_attention, attention, atol=1e-3 * max(1.0, float(np.abs(attention).max())))
    for (logits, attention), (their_logits, their_attention) in zip(got, again, strict=False):
        np.testing.assert_array_equal(their_logits, logits)
        np.testing.assert_array_equal(their_attention, attention)


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the attention kernels are CUDA's (MLX's CUDA backend)")
@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(("dtype", "atol"), [(mx.float32, 2e-3), (mx.float16, 5e-2)])
def test_one_token_steps_equal_decoder_states(dtype: mx.Dtype, atol: float, compiled: bool) -> None:
    model = _model(dtype)
    features = _features(dtype)
    expected = _run(GraphStep(model, features, HEADS), steps=70)  # past the cache's first 64 positions
    got = _run(KernelStep(model, features, KernelProgram(model, HEADS, compiled=compiled)), steps=70)
    for (logits, attention), (their_logits, their_attention) in zip(expected, got, strict=True):
        np.testing.assert_allclose(their_logits, logits, atol=atol * max(1.0, float(np.abs(logits).max())))
        np.testing.assert_allclose(their_attention, attention, atol=atol * max(1.0, float(np.abs(attention).max())))


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the linear kernel is CUDA's (MLX's CUDA backend)")
@pytest.mark.parametrize("rows", [1, 5, 17, 64, 100])  # one tile, a partial tile, two, a block's 64, two blocks
@pytest.mark.parametrize(
    ("bias", "gelu", "residual"), [(False, False, False), (True, False, True), (True, True, False)]
)
def test_the_linear_kernel_equals_mlxs_ops(rows: int, bias: bool, gelu: bool, residual: bool) -> None:
    from onepass_whisper.adapters.mlx import cuda_kernels
    from onepass_whisper.adapters.mlx.step.common import gelu as exact_gelu

    keys = mx.random.split(mx.random.key(6), 4)
    x = mx.random.normal((rows, 1, 256), key=keys[0]).astype(mx.float16)
    weight = (0.1 * mx.random.normal((96, 256), key=keys[1])).astype(mx.float16)
    b = mx.random.normal((96,), key=keys[2]).astype(mx.float16) if bias else None
    r = mx.random.normal((rows, 1, 96), key=keys[3]).astype(mx.float16) if residual else None
    assert cuda_kernels.linear_fits(x, weight) == (rows <= cuda_kernels.LINEAR_KERNEL_MAX_ROWS)
    expected = x.astype(mx.float32) @ weight.T.astype(mx.float32)
    if b is not None:
        expected = expected + b.astype(mx.float32)
    if gelu:
        expected = exact_gelu(expected)
    if r is not None:
        expected = expected + r.astype(mx.float32)
    got = cuda_kernels.linear(x, weight, b, gelu, r)
    assert got.shape == (rows, 1, 96)
    np.testing.assert_allclose(np.array(got.astype(mx.float32)), np.array(expected), atol=2e-2, rtol=1e-2)


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the linear kernel is CUDA's (MLX's CUDA backend)")
@pytest.mark.parametrize("rows", [5, 16])  # a partial tile (zero rows below), a whole one
@pytest.mark.parametrize(("out_features", "in_features"), [(1280, 1280), (1280, 5120), (3840, 1280), (96, 256)])
@pytest.mark.parametrize(("norm", "gelu", "residual"), [(False, False, True), (True, True, False)])
@pytest.mark.parametrize("split", [True, False])
def test_the_linear_kernel_with_a_layer_norm_or_split_k_equals_mlxs_ops(
    rows: int, out_features: int, in_features: int, norm: bool, gelu: bool, residual: bool, split: bool
) -> None:
    from onepass_whisper.adapters.mlx import cuda_kernels
    from onepass_whisper.adapters.mlx.step.common import gelu as exact_gelu

    keys = mx.random.split(mx.random.key(7), 6)
    x = (3 + 2 * mx.random.normal((rows, 1, in_features), key=keys[0])).astype(mx.float16)  # a mean to take off
    weight = (in_features**-0.5 * mx.random.normal((out_features, in_features), key=keys[1])).astype(mx.float16)
    b = mx.random.normal((out_features,), key=keys[2]).astype(mx.float16)
    r = mx.random.normal((rows, 1, out_features), key=keys[3]).astype(mx.float16) if residual else None
    gamma = (1 + 0.1 * mx.random.normal((in_features,), key=keys[4])).astype(mx.float16)
    beta = (0.1 * mx.random.normal((in_features,), key=keys[5])).astype(mx.float16)
    assert cuda_kernels.linear_fits(x, weight)
    x32 = x.astype(mx.float32)
    if norm:
        x32 = mx.fast.layer_norm(x32, gamma.astype(mx.float32), beta.astype(mx.float32), 1e-5)
    expected = x32 @ weight.T.astype(mx.float32) + b.astype(mx.float32)
    if gelu:
        expected = exact_gelu(expected)
    if r is not None:
        expected = expected + r.astype(mx.float32)
    splits = cuda_kernels.split_count(out_features, in_features)
    assert (splits > 1) == (out_features // 16 < cuda_kernels.SPLIT_BELOW_TILES)
    counters = mx.zeros((out_features // 16,), dtype=mx.uint32) if split else None
    normed = (gamma, beta, 1e-5) if norm else None
    staged = in_features // splits if split else in_features  # the part of K a block normalises into shared memory
    if norm and 16 * (staged + 8) * 2 > 48 * 1024:
        with pytest.raises(ValueError, match="too wide"):
            cuda_kernels.linear(x, weight, b, gelu, r, normed, counters)
        return
    # evaluated one after the other: MLX orders two launches that share counters only through their data
    first = cuda_kernels.linear(x, weight, b, gelu, r, normed, counters)
    mx.eval(first)
    second = cuda_kernels.linear(x, weight, b, gelu, r, normed, counters)
    mx.eval(second)
    if counters is not None:
        assert not np.array(counters).any()  # the last block of each column tile set its counter back
    assert first.shape == (rows, 1, out_features)
    np.testing.assert_allclose(np.array(first.astype(mx.float32)), np.array(expected), atol=3e-2, rtol=1e-2)
    # the partial sums are added in split order whichever block came last: the same bits again
    np.testing.assert_array_equal(np.array(second), np.array(first))
