"""A window's log-mel spectrogram, and Whisper's audio encoder two ways: as MLX ops (a GPU), or in numpy over the
model's own weights (the CPU backend).

Which one runs is the step factory's choice (``step.factory.Backend``), as is the decoder step.
"""

from __future__ import annotations

from concurrent.futures import Executor

import mlx.core as mx
import numpy as np
from mlx_whisper.audio import N_FFT, N_FRAMES, N_SAMPLES, log_mel_spectrogram
from mlx_whisper.whisper import ResidualAttentionBlock, Whisper
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx import cpu_kernels
from onepass_whisper.adapters.mlx.step.common import fused_gelu, merge_heads, split_heads
from onepass_whisper.adapters.mlx.weights import encoder_weights


def encode_on_host(model: Whisper, mels: mx.array, pool: Executor | None = None) -> mx.array:
    """``encode`` in numpy over the model's own weights (``cpu_kernels.encode``), its row blocks and attention heads
    shared out among ``pool``'s threads: the CPU backend's, as MLX's CPU ``exp``/``erf`` are not vectorised, and MLX
    keeps its BLAS on one thread for the decoder's small matmuls (``docs/performance.md`` #28, #30-#31)."""
    features = cpu_kernels.encode(encoder_weights(model), np.array(mels, dtype=np.float32), pool)
    return mx.array(features).astype(mels.dtype)


def encode(model: Whisper, mels: mx.array) -> mx.array:
    """mlx-whisper's ``AudioEncoder`` (batch × frames × mels -> batch × audio ctx × state), same layers and weights.

    The attention is fused (``mx.fast.scaled_dot_product_attention``): the 1500 × 1500 weights are never needed.
    """
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


def window_mel(samples: NDArray[np.float32], n_mels: int) -> mx.array:
    """A window's log-mel frames (``N_FRAMES`` × mels), as ``log_mel_spectrogram(samples, padding=N_SAMPLES)`` cut
    to ``N_FRAMES``, with only the padding those frames see: zeros to ``N_SAMPLES`` and one FFT length beyond, not 30
    more seconds (half the STFT's work; the frames past the cut that the spectrogram's maximum sees are kept)."""
    padding = max(0, N_SAMPLES + N_FFT - len(samples))
    mel: mx.array = log_mel_spectrogram(mx.array(samples), n_mels, padding=padding)[:N_FRAMES]
    return mel
