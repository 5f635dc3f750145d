"""A row refilled with a new window (``DecoderStep.put``) goes on at its own positions: each window's logits and
captured attention, step by step, equal those of the window decoded alone, whatever the other rows are doing and
whenever the refill comes; on the three steps (``HostStep``, ``GraphStep``, ``KernelStep`` over the kernels' MLX-op
equivalents, compiled or not), across the cache's growth and a compaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlx_whisper.whisper import ModelDimensions, Whisper

from onepass_whisper.adapters.mlx.step.graph import GraphStep
from onepass_whisper.adapters.mlx.step.host import HostStep
from onepass_whisper.adapters.mlx.step.kernels import KernelProgram, KernelStep
from onepass_whisper.adapters.mlx.weights import decoder_weights
from tests.integration import kernel_reference

DIMS = ModelDimensions(
    n_mels=80,
    n_audio_ctx=64,
    n_audio_state=64,
    n_audio_head=4,
    n_audio_layer=1,
    n_vocab=51864,
    n_text_ctx=448,
    n_text_state=64,
    n_text_head=4,
    n_text_layer=2,
)
HEADS = [(1, 2), (0, 1)]
PROMPT = [50257, 50362, 50363]
WINDOWS = 4


@pytest.fixture(scope="module")
def model() -> Whisper:
    mx.random.seed(3)
    whisper = Whisper(DIMS, dtype=mx.float32)
    mx.eval(whisper.parameters())
    return whisper


@pytest.fixture(scope="module")
def features() -> mx.array:
    return mx.random.normal((WINDOWS, DIMS.n_audio_ctx, DIMS.n_audio_state), key=mx.random.key(4))


def _steps(model: Whisper, kind: str) -> tuple[Callable[[mx.array], Any], Callable[[Any], Any]]:
    """The step of ``kind`` for some windows' features, and how its tokens and rows are given to it."""
    if kind == "host":
        weights = decoder_weights(model)
        return (lambda f: HostStep(weights, np.array(f), HEADS)), np.asarray
    if kind == "graph":
        return (lambda f: GraphStep(model, f, HEADS)), mx.array
    if kind == "cuda":  # the CUDA kernels themselves: the self-attention kernel reads each row's position
        program = KernelProgram(model, HEADS)
    else:
        program = KernelProgram(model, HEADS, compiled=kind == "kernels-compiled", kernels=kernel_reference)
    return (lambda f: KernelStep(model, f, program)), mx.array


def _tokens(window: int, count: int) -> np.ndarray:
    return np.random.default_rng(window).integers(0, 50257, 80)[:count]


def _alone(
    new: Callable[[mx.array], Any], wrap: Callable[[Any], Any], features: mx.array, window: int, steps: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    state = new(features[window : window + 1])
    logits, attention = state.step(wrap(np.array([PROMPT])))
    out = [(np.array(logits[0])[0], np.array(attention)[0])]
    for token in _tokens(window, steps):
        (logits_step,), attention = state.step(wrap(np.array([[token]])))
        out.append((np.array(logits_step)[0], np.array(attention)[0]))
    return out


def _refilled(
    new: Callable[[mx.array], Any], wrap: Callable[[Any], Any], features: mx.array, lengths: list[int], rows: int
) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Windows 0.. through ``rows`` rows: each row, once its window has taken its ``lengths`` steps, takes the next
    window (prompted alone, then ``put``); rows with none left are compacted away."""
    waiting = list(range(rows, len(lengths)))
    state = new(features[:rows])
    logits, attention = state.step(wrap(np.array([PROMPT] * rows)))
    active = list(range(rows))
    out = {w: [(np.array(logits[0])[i], np.array(attention)[i])] for i, w in enumerate(active)}
    while active:
        done = [i for i, w in enumerate(active) if len(out[w]) > lengths[w]]
        refill = done[: len(waiting)]
        if refill:
            windows = [waiting.pop(0) for _ in refill]
            fresh = new(features[mx.array(windows)])
            logits, attention = fresh.step(wrap(np.array([PROMPT] * len(windows))))
            state.put(wrap(np.array(refill)), fresh)
            for i, w in zip(refill, windows):
                active[i] = w
                out[w] = [(np.array(logits[0])[refill.index(i)], np.array(attention)[refill.index(i)])]
        gone = [i for i in done if i not in refill]
        if gone:
            keep = [i for i in range(len(active)) if i not in gone]
            if not keep:
                break
            state.keep(wrap(np.array(keep)))
            active = [active[i] for i in keep]
        tokens = np.array([[_tokens(w, lengths[w])[len(out[w]) - 1]] for w in active])
        (logits_step,), attention = state.step(wrap(tokens))
        for i, w in enumerate(active):
            out[w].append((np.array(logits_step)[i], np.array(attention)[i]))
    return out


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not mx.cuda.is_available(), reason="MLX's CUDA backend"))
KINDS = ["host", "graph", "kernels", "kernels-compiled", CUDA]
# float32 matmuls on CUDA run in TF32 and cuBLAS picks its algorithm by shape: a row's rounding depends on the batch
TOLERANCE = 5e-3 if mx.cuda.is_available() else 2e-4


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 70), min_size=WINDOWS, max_size=WINDOWS), rows=st.integers(1, 3))
def test_a_refilled_row_steps_as_its_window_alone(
    model: Whisper, features: mx.array, kind: str, lengths: list[int], rows: int
) -> None:
    new, wrap = _steps(model, kind)
    got = _refilled(new, wrap, features, lengths, rows)
    assert sorted(got) == list(range(WINDOWS))
    for window, length in enumerate(lengths):
        expected = _alone(new, wrap, features, window, length)
        assert len(got[window]) == len(expected) == length + 1
        for (logits, attention), (their_logits, their_attention) in zip(expected, got[window]):
            scale, qk_scale = max(1.0, float(np.abs(logits).max())), max(1.0, float(np.abs(attention).max()))
            np.testing.assert_allclose(their_logits, logits, atol=TOLERANCE * scale)
            np.testing.assert_allclose(their_attention, attention, atol=TOLERANCE * qk_scale)


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_of_several_tokens_refuses_rows_at_different_positions(
    model: Whisper, features: mx.array, kind: str
) -> None:
    new, wrap = _steps(model, kind)
    state = new(features[:2])
    state.step(wrap(np.array([PROMPT] * 2)))
    fresh = new(features[2:3])
    fresh.step(wrap(np.array([PROMPT[:1]])))
    state.put(wrap(np.array([1])), fresh)
    with pytest.raises(ValueError, match="same position"):
        state.step(wrap(np.array([PROMPT[:2]] * 2)))
