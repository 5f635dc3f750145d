"""``KernelStep`` (MLX's CUDA backend: position-major caches, custom attention kernels) gives what
``GraphStep`` gives: the same logits and captured attention, through the prompt, one-token steps (compiled or
not), the cache's growth and the batch's compaction. Its prompt step runs everywhere; its one-token steps run
everywhere over MLX-op equivalents of the kernels (``kernel_reference``), and over the CUDA kernels there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the attention kernels are CUDA's (MLX's CUDA backend)")
@pytest.mark.parametrize(("batch", "frames"), [(1, 1500), (2, 1500), (1, 1000), (3, 700), (1, 130), (12, 1500)])
@pytest.mark.parametrize("heads", [(), (0, 3, 5)])
def test_the_split_cross_attention_equals_the_unsplit_and_mlxs_ops(
    batch: int, frames: int, heads: tuple[int, ...]
) -> None:
    """Few sequences split each head's frames over several blocks (a ragged last part where the frames do not
    divide); the parts combined give the unsplit kernel's output and the captured scores of every frame."""
    from onepass_whisper.adapters.mlx import cuda_kernels

    n_head, state = 20, 1280
    keys = mx.random.split(mx.random.key(8), 3)
    q = mx.random.normal((batch, 1, state), key=keys[0]).astype(mx.float16)
    k = mx.random.normal((batch, frames, state), key=keys[1]).astype(mx.float16)
    v = mx.random.normal((batch, frames, state), key=keys[2]).astype(mx.float16)
    splits = cuda_kernels.cross_split_count(batch, n_head, frames)
    assert splits == (1 if batch * n_head > cuda_kernels.CROSS_SPLIT_PAIRS else min(
        cuda_kernels.CROSS_MAX_SPLITS, cuda_kernels.CROSS_TARGET_BLOCKS // (batch * n_head),
        frames // cuda_kernels.CROSS_MIN_FRAMES) if frames // cuda_kernels.CROSS_MIN_FRAMES > 1 else 1)  # fmt: skip
    counters = mx.zeros((cuda_kernels.CROSS_SPLIT_PAIRS,), dtype=mx.uint32)
    expected, expected_qk = kernel_reference.cross_attention(
        q.astype(mx.float32), k.astype(mx.float32), v.astype(mx.float32), n_head, heads
    )
    unsplit, unsplit_qk = cuda_kernels.cross_attention(q, k, v, n_head, heads)
    first, first_qk = cuda_kernels.cross_attention(q, k, v, n_head, heads, counters)
    mx.eval(first, first_qk) if first_qk is not None else mx.eval(first)
    second, _ = cuda_kernels.cross_attention(q, k, v, n_head, heads, counters)  # after the first: shared counters
    mx.eval(second)
    assert not np.array(counters).any()  # the last part of each (sequence, head) set its counter back
    np.testing.assert_allclose(np.array(first.astype(mx.float32)), np.array(expected), atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(np.array(first.astype(mx.float32)), np.array(unsplit.astype(mx.float32)), atol=2e-3)
    np.testing.assert_array_equal(np.array(second), np.array(first))  # combined in part order: the same bits
    if heads:
        assert first_qk is not None and unsplit_qk is not None and expected_qk is not None
        np.testing.assert_array_equal(np.array(first_qk), np.array(unsplit_qk))
        np.testing.assert_allclose(np.array(first_qk.astype(mx.float32)), np.array(expected_qk), atol=5e-2, rtol=1e-2)
    else:
        assert first_qk is None


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the attention kernels are CUDA's (MLX's CUDA backend)")
def test_one_token_steps_with_the_split_cross_attention_equal_the_unsplit() -> None:
    """At few sequences every layer's cross-attention splits its frames (3 and then 2 rows of 6 heads: 12 parts);
    the step's logits stay the unsplit step's to float16 rounding of the sums' order, its captured rows exactly."""
    model = _model(mx.float16)
    features = _features(mx.float16)
    expected = _run(KernelStep(model, features, KernelProgram(model, HEADS, split_cross=False)), steps=20)
    got = _run(KernelStep(model, features, KernelProgram(model, HEADS)), steps=20)
    for (logits, attention), (their_logits, their_attention) in zip(expected, got, strict=True):
        np.testing.assert_allclose(their_logits, logits, atol=5e-2 * max(1.0, float(np.abs(logits).max())))
        np.testing.assert_array_equal(their_attention, attention)


def test_the_cross_attention_splits_its_frames_only_where_sequences_are_few() -> None:
    """Large-v3's 20 heads: 12 parts a head at batch 1 (240 blocks), 2 at batch 6, none from 7 on, where the
    unsplit blocks already fill the GPU; never parts under ``CROSS_MIN_FRAMES``."""
    from onepass_whisper.adapters.mlx import cuda_kernels

    assert [cuda_kernels.cross_split_count(batch, 20, 1500) for batch in (1, 2, 6, 7, 64)] == [12, 6, 2, 1, 1]
    assert cuda_kernels.cross_split_count(1, 20, 100) == 1
    assert cuda_kernels.cross_split_count(1, 6, 1500) == 12


# the cross-attention kernels' source as MLX's CUDA backend wraps it (its header, the signature from the inputs and
# outputs, the template constants: ``mlx/backend/cuda/custom_kernel.cpp``), instantiated at large-v3's shapes
_CROSS_AS_MLX_BUILDS_IT = """
#include <cooperative_groups.h>
#include <cuda/std/array>
#include <cuda_fp16.h>
#include <cstdint>
namespace mlx::core::cu {
template <typename T, int H, int DH, int ROWS, int FRAMES, int S, int THREADS, int CAPTURED>
__global__ void cross(const T* q, const T* k, const T* v, @INPUTS@ T* out @OUTPUTS@) {
@SOURCE@
}
template __global__ void cross<__half, 20, 64, 125, 1500, 12, 256, 8>(
    const __half*, const __half*, const __half*, @INPUT_TYPES@ __half* @OUTPUT_TYPES@);
}  // namespace mlx::core::cu
"""


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("capture", [False, True])
def test_the_cross_attention_source_compiles_for_the_h100(tmp_path: Path, capture: bool, split: bool) -> None:
    """What NVRTC would reject on the GPU machine, found here by nvcc (sm_90: H100 and H200), warnings as errors."""
    from onepass_whisper.adapters.mlx import cuda_kernels

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc to compile the CUDA kernels' source")
    body = cuda_kernels._BODY.replace("/*CAPTURE*/", cuda_kernels._CAPTURE if capture else "")
    body = body.replace("/*FINISH*/", cuda_kernels._SPLIT_FINISH if split else cuda_kernels._FINISH)
    source = _CROSS_AS_MLX_BUILDS_IT.replace("@SOURCE@", cuda_kernels._CONSTANTS + cuda_kernels._CROSS + body)
    source = source.replace("@INPUTS@", "const uint32_t* counters," if split else "")
    source = source.replace("@INPUT_TYPES@", "const uint32_t*," if split else "")
    source = source.replace("@OUTPUTS@", (", T* qk" if capture else "") + (", float* ws" if split else ""))
    source = source.replace("@OUTPUT_TYPES@", (", __half*" if capture else "") + (", float*" if split else ""))
    (tmp_path / "cross.cu").write_text(source, encoding="utf-8")
    command = [nvcc, "-arch=sm_90", "-std=c++17", "-Werror", "all-warnings", "-c", "cross.cu", "-o", "cross.o"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
