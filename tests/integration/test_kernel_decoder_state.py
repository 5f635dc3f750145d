"""``KernelDecoderState`` (MLX's CUDA backend: position-major caches, custom attention kernels) gives what
``DecoderState`` gives: the same logits and captured attention, through the prompt, one-token steps and the batch's
compaction. Its prompt step runs everywhere; the one-token steps need the CUDA kernels, so only there."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_whisper.whisper import ModelDimensions, Whisper

from adapters.mlx.forward import DecoderState, KernelDecoderState

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


def _run(state: DecoderState, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The prompt, then ``steps`` one-token steps of fixed tokens; rows 0 and 2 of 3 kept after two."""
    logits, attention = state.step(mx.array([PROMPT] * 3), logit_positions=(0, -1))
    out = [(np.array(logits[0]), np.array(attention)), (np.array(logits[1]), np.array(attention))]
    tokens = np.random.default_rng(5).integers(0, 50257, (3, steps))
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
    reference = DecoderState(model, features, HEADS)
    logits, attention = reference.step(mx.array([PROMPT] * 3), logit_positions=(0, -1))
    kernels = KernelDecoderState(model, features, HEADS)
    their_logits, their_attention = kernels.step(mx.array([PROMPT] * 3), logit_positions=(0, -1))
    assert their_attention.shape == (3, len(HEADS), DIMS.n_audio_ctx)
    for ours, theirs in zip(logits, their_logits, strict=True):
        np.testing.assert_allclose(np.array(theirs), np.array(ours), atol=PROMPT_ATOL)
    np.testing.assert_allclose(np.array(their_attention), np.array(attention), atol=PROMPT_ATOL)


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the attention kernels are CUDA's (MLX's CUDA backend)")
@pytest.mark.parametrize(("dtype", "atol"), [(mx.float32, 2e-3), (mx.float16, 5e-2)])
def test_one_token_steps_equal_decoder_states(dtype: mx.Dtype, atol: float) -> None:
    model = _model(dtype)
    features = _features(dtype)
    expected = _run(DecoderState(model, features, HEADS), steps=70)  # past the cache's first 64 positions
    got = _run(KernelDecoderState(model, features, HEADS), steps=70)
    for (logits, attention), (their_logits, their_attention) in zip(expected, got, strict=True):
        np.testing.assert_allclose(their_logits, logits, atol=atol * max(1.0, float(np.abs(logits).max())))
        np.testing.assert_allclose(their_attention, attention, atol=atol * max(1.0, float(np.abs(attention).max())))


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the linear kernel is CUDA's (MLX's CUDA backend)")
@pytest.mark.parametrize("rows", [1, 5, 17, 64, 100])  # one tile, a partial tile, two, a block's 64, two blocks
@pytest.mark.parametrize(("bias", "gelu", "residual"), [(False, False, False), (True, False, True), (True, True, False)])
def test_the_linear_kernel_equals_mlxs_ops(rows: int, bias: bool, gelu: bool, residual: bool) -> None:
    from adapters.mlx import cuda_kernels
    from adapters.mlx.forward import gelu as exact_gelu

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
