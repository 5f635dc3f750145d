"""The model's weights as numpy views (float32 on the CPU backend: no copies), for the numpy encoder and decoder
step: the exporter, apart from the code that runs them."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
from mlx_whisper.whisper import ResidualAttentionBlock, Whisper
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx import cpu_kernels
from onepass_whisper.adapters.mlx.step import host


def encoder_weights(model: Whisper) -> cpu_kernels.EncoderWeights:
    """The model's audio encoder as numpy views of its weights (float32 on the CPU backend: no copies)."""
    encoder = model.encoder
    blocks: list[ResidualAttentionBlock] = encoder.blocks
    return cpu_kernels.EncoderWeights(
        conv1=_conv(encoder.conv1),
        conv2=_conv(encoder.conv2),
        positional=_array(encoder._positional_embedding),
        blocks=tuple(
            cpu_kernels.EncoderBlock(
                attn_ln=_norm(b.attn_ln),
                query=_linear(b.attn.query),
                key=_linear(b.attn.key),
                value=_linear(b.attn.value),
                out=_linear(b.attn.out),
                mlp_ln=_norm(b.mlp_ln),
                mlp1=_linear(b.mlp1),
                mlp2=_linear(b.mlp2),
            )
            for b in blocks
        ),
        ln_post=_norm(encoder.ln_post),
        n_head=blocks[0].attn.n_head,
    )


def decoder_weights(model: Whisper) -> host.DecoderWeights:
    """The model's text decoder as numpy views of its weights (float32 on the CPU backend: no copies)."""
    decoder = model.decoder
    blocks: list[ResidualAttentionBlock] = decoder.blocks

    def block(b: ResidualAttentionBlock) -> host.DecoderBlock:
        cross, cross_ln = b.cross_attn, b.cross_attn_ln
        assert cross is not None and cross_ln is not None
        return host.DecoderBlock(
            attn_ln=_norm(b.attn_ln),
            query=_linear(b.attn.query),
            key=_linear(b.attn.key),
            value=_linear(b.attn.value),
            out=_linear(b.attn.out),
            cross_ln=_norm(cross_ln),
            cross_query=_linear(cross.query),
            cross_key=_linear(cross.key),
            cross_value=_linear(cross.value),
            cross_out=_linear(cross.out),
            mlp_ln=_norm(b.mlp_ln),
            mlp1=_linear(b.mlp1),
            mlp2=_linear(b.mlp2),
        )

    return host.DecoderWeights(
        token_embedding=_array(decoder.token_embedding.weight),
        positional=_array(decoder.positional_embedding),
        blocks=tuple(block(b) for b in blocks),
        ln=_norm(decoder.ln),
        n_head=blocks[0].attn.n_head,
    )


def _array(a: mx.array) -> NDArray[np.float32]:
    """A view of ``a`` (MLX arrays export their buffer), or a float32 copy if it is of another type."""
    return np.asarray(a, dtype=np.float32)


def _linear(layer: Any) -> cpu_kernels.Linear:
    return cpu_kernels.Linear(_array(layer.weight).T, _array(layer.bias) if "bias" in layer else None)


def _conv(layer: Any) -> cpu_kernels.Linear:
    """A convolution's out × taps × in weight as a (taps × in) × out matrix, for im2col."""
    weight = _array(layer.weight)
    return cpu_kernels.Linear(weight.reshape(weight.shape[0], -1).T, _array(layer.bias))


def _norm(layer: Any) -> cpu_kernels.LayerNorm:
    return cpu_kernels.LayerNorm(_array(layer.weight), _array(layer.bias))
