"""The one place that picks how a batch is encoded and stepped: from the device, and the settings.

- the CPU backend (``HostBackend``): the encoder and decoder step in numpy over the model's weights, the rules and
  scores too, the host reading every step (``loop.decode_synced``): MLX's CPU ``exp``/``erf`` are slow and each
  MLX/numpy exchange is a synchronisation;
- a GPU (``DeviceBackend``): everything on MLX, the device kept busy (``loop.decode_lagged``); the step is
  ``KernelStep`` on MLX's CUDA backend (unless ``cuda_kernels`` is off), else ``GraphStep``, with the explicit
  cross-attention from ``EXPLICIT_CROSS_MIN_BATCH`` rows on and the GELU fused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import mlx.core as mx
import numpy as np
from attrs import frozen
from mlx_whisper.whisper import Whisper
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from onepass_whisper.adapters.mlx import cuda_dtw
from onepass_whisper.adapters.mlx.alignment import DeviceAlignment, dtw_first_frames
from onepass_whisper.adapters.mlx.encoder import encode, encode_on_host
from onepass_whisper.adapters.mlx.loop import BatchResults, decode_lagged, decode_synced
from onepass_whisper.adapters.mlx.refill import Admit, decode_refilled_lagged, decode_refilled_synced
from onepass_whisper.adapters.mlx.rules import LogitRules, logsumexp
from onepass_whisper.adapters.mlx.step import DecoderStep
from onepass_whisper.adapters.mlx.step.graph import GraphStep
from onepass_whisper.adapters.mlx.step.host import DecoderWeights, HostStep
from onepass_whisper.adapters.mlx.step.kernels import KernelProgram, KernelStep
from onepass_whisper.adapters.mlx.step.settings import StepSettings
from onepass_whisper.adapters.mlx.weights import decoder_weights

EXPLICIT_CROSS_MIN_BATCH = 16  # GPU: from this batch on, explicit cross-attention beats the fused kernel


@frozen
class Prompt:
    """A batch's initial tokens (batch × length), the index of start-of-transcript in them, and the no-speech
    token (None: the model has none)."""

    tokens: NDArray[np.int32]
    sot_index: int
    no_speech: int | None


@frozen(eq=False)
class Prompted:
    """Windows' own step with their prompt fed: the logits of their first token (at the prompt's last position,
    float32), its captured row and each window's probability of no speech (NaN where the model has no such
    token); numpy (the host's) or MLX arrays (the device's: read with ``np.asarray`` once the decoding is done)."""

    step: DecoderStep[Any]
    logits: Any
    attention: Any
    no_speech: Any


class Backend(Protocol):
    """How a batch of windows is encoded and decoded; ``choose`` makes the one for this device."""

    @property
    def compiled_rules(self) -> bool:
        """Whether the logit rules' mask is a compiled MLX function (the device loop's)."""
        ...

    @property
    def side_stream(self) -> mx.Stream | None:
        """Where a later batch's encoder may run beside this batch's decoding (``MlxWhisperDecoder.encode_ahead``):
        a second stream of a GPU, whose decoder step leaves it idle between kernels; None where nothing gains."""
        ...

    def encode(self, mels: mx.array) -> mx.array:
        """batch × frames × mels -> batch × audio ctx × state, evaluated."""
        ...

    def encode_unevaluated(self, mels: mx.array) -> mx.array:
        """``encode``'s output where the backend can leave it unevaluated (MLX's encoder: its graph, on the current
        stream); the numpy encoder's evaluated."""
        ...

    def decode(
        self,
        features: mx.array,
        prompt: Prompt,
        rules: LogitRules,
        results: BatchResults,
        temperature: float,
        finish_below: NDArray[np.int64] | None,
    ) -> NDArray[np.float64]:
        """The batch decoded into ``results``; returns each row's no-speech probability (NaN without one)."""
        ...

    def prompt(self, features: mx.array, prompt: Prompt, batch: int | None = None) -> Prompted:
        """A step over ``features``' windows with ``prompt`` fed, laid out for a batch of ``batch`` rows (the one
        its rows will join, ``DecoderStep.put``; by default its own)."""
        ...

    def decode_refilled(self, admit: Admit, rows: int, rules: LogitRules, results: BatchResults) -> list[int]:
        """Greedy decoding of every window ``admit`` gives, ``rows`` at a time (``refill.py``), into ``results``;
        returns the batch size of each step."""
        ...


def choose(model: Whisper, alignment_heads: Sequence[tuple[int, int]], settings: StepSettings) -> Backend:
    """The backend for MLX's default device: the CPU's, or a GPU's (CUDA kernels if available and allowed)."""
    if mx.default_device() == mx.cpu:
        return HostBackend(model, alignment_heads)
    program = KernelProgram(model, alignment_heads) if settings.cuda_kernels and mx.cuda.is_available() else None
    return DeviceBackend(model, alignment_heads, program)


def choose_alignment(settings: StepSettings) -> DeviceAlignment | None:
    """Whether word timing's reduction and DTW run on the device, for a whole batch (``alignment.py``), and with
    which DTW: by default on MLX's CUDA backend only (the CUDA kernel, ``cuda_dtw``), where the attention rows would
    otherwise cross to the host and the host's numpy took longer than the decoding (``docs/performance.md`` #85);
    ``settings.device_alignment`` forces it either way (elsewhere with the MLX-op DTW)."""
    cuda = mx.default_device() != mx.cpu and mx.cuda.is_available()
    wanted = cuda if settings.device_alignment is None else settings.device_alignment
    if not wanted:
        return None
    return DeviceAlignment(settings.median_width, cuda_dtw.dtw_first_frames if cuda else dtw_first_frames)


class HostBackend:
    """The CPU backend: numpy encoder and ``HostStep``, the synced loop; the work shared out among one thread a
    core, numpy's BLAS on one thread meanwhile (its own threads would hand off every small matmul, at great cost
    whenever another process holds a core)."""

    compiled_rules = False
    side_stream = None  # the cores are busy decoding: an encoder beside it would only share them

    def __init__(self, model: Whisper, alignment_heads: Sequence[tuple[int, int]], threads: int | None = None) -> None:
        self.model = model
        self.alignment_heads = list(alignment_heads)
        self._threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="numpy")
        self._blas = ThreadpoolController()  # the loaded BLAS libraries, found once
        self._weights: DecoderWeights | None = None  # made on first use

    @contextmanager
    def _one_blas_thread(self) -> Iterator[None]:
        with self._blas.limit(limits=1, user_api="blas"):
            yield

    def encode(self, mels: mx.array) -> mx.array:
        with self._one_blas_thread():
            features = encode_on_host(self.model, mels, pool=self._pool)
            mx.eval(features)
        return features

    encode_unevaluated = encode

    def decode(
        self,
        features: mx.array,
        prompt: Prompt,
        rules: LogitRules,
        results: BatchResults,
        temperature: float,
        finish_below: NDArray[np.int64] | None,
    ) -> NDArray[np.float64]:
        with self._one_blas_thread():
            started = self.prompt(features, prompt)
            decode_synced(started.step, rules, started.logits, started.attention, results, temperature, finish_below)
        return np.asarray(started.no_speech, np.float64)

    def prompt(self, features: mx.array, prompt: Prompt, batch: int | None = None) -> Prompted:
        with self._one_blas_thread():
            if self._weights is None:  # views on the CPU backend; copies elsewhere
                self._weights = decoder_weights(self.model)
            step = HostStep(
                self._weights, np.asarray(features, np.float32), self.alignment_heads, self._pool, self._threads
            )
            logits, attention = step.step(prompt.tokens, logit_positions=(prompt.sot_index, -1))
        first = logits[0]  # at the start-of-transcript token: each row's probability of no speech
        no_speech = prompt.no_speech
        probabilities: NDArray[np.float64] = (
            np.full(len(first), np.nan) if no_speech is None else np.exp(first[:, no_speech] - logsumexp(first))
        )
        return Prompted(step, logits[1], attention, probabilities)

    def decode_refilled(self, admit: Admit, rows: int, rules: LogitRules, results: BatchResults) -> list[int]:
        with self._one_blas_thread():
            return decode_refilled_synced(admit, rows, rules, results)


class DeviceBackend:
    """A GPU: MLX's encoder, ``KernelStep`` over ``program`` (MLX's CUDA backend) or ``GraphStep``, the lagged loop.

    ``gpu`` False runs the same loop and ``GraphStep`` on MLX's CPU backend (the tests' way to check it against the
    host's): the encoder in numpy then, as on the CPU backend, and nothing compiled.
    """

    def __init__(
        self,
        model: Whisper,
        alignment_heads: Sequence[tuple[int, int]],
        program: KernelProgram | None = None,
        gpu: bool = True,
        ahead: bool | None = None,
    ) -> None:
        """``ahead``: whether a later batch may be encoded on a second stream (``side_stream``); by default on a
        GPU only (the tests turn it on for MLX's CPU backend, where it changes nothing but the path taken)."""
        self.model = model
        self.alignment_heads = list(alignment_heads)
        self.program = program  # the model's one-token step, compiled: made once, kept
        self.gpu = gpu
        self.side_stream = mx.new_stream(mx.default_device()) if (gpu if ahead is None else ahead) else None

    @property
    def compiled_rules(self) -> bool:
        return self.gpu

    def encode(self, mels: mx.array) -> mx.array:
        features = self.encode_unevaluated(mels)
        mx.eval(features)
        return features

    def encode_unevaluated(self, mels: mx.array) -> mx.array:
        return encode(self.model, mels) if self.gpu else encode_on_host(self.model, mels)

    def new_step(self, features: mx.array, batch: int | None = None) -> DecoderStep[mx.array]:
        """The step for a batch of windows' features, laid out for ``batch`` rows (by default theirs)."""
        if self.program is not None:
            return KernelStep(self.model, features, self.program)
        rows = features.shape[0] if batch is None else batch
        explicit = self.gpu and rows >= EXPLICIT_CROSS_MIN_BATCH
        return GraphStep(self.model, features, self.alignment_heads, explicit_cross=explicit, fused=self.gpu)

    def decode(
        self,
        features: mx.array,
        prompt: Prompt,
        rules: LogitRules,
        results: BatchResults,
        temperature: float,
        finish_below: NDArray[np.int64] | None,
    ) -> NDArray[np.float64]:
        started = self.prompt(features, prompt)
        decode_lagged(started.step, rules, started.logits, started.attention, results, temperature, finish_below)
        return np.asarray(started.no_speech, np.float64)

    def prompt(self, features: mx.array, prompt: Prompt, batch: int | None = None) -> Prompted:
        step = self.new_step(features, batch)
        logits, attention = step.step(mx.array(prompt.tokens), logit_positions=(prompt.sot_index, -1))
        no_speech = prompt.no_speech
        probabilities = mx.softmax(logits[0], axis=-1)[:, no_speech] if no_speech is not None else None
        # read once the decoding is done (``np.asarray``): a read here would make the host wait for the prompt
        lazy = np.full(features.shape[0], np.nan) if probabilities is None else probabilities
        return Prompted(step, logits[1], attention, lazy)

    def decode_refilled(self, admit: Admit, rows: int, rules: LogitRules, results: BatchResults) -> list[int]:
        return decode_refilled_lagged(admit, rows, rules, results)
