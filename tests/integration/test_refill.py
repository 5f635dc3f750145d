"""Continuous batching on real tiny.en weights: a call with more windows than ``rows`` keeps ``rows`` busy, each
window taking a freed row (``refill.py``), and every window's result is the one it gets decoded alone or in one
batch; a window that falls back still does; the lagged loop steps at a bounded set of batch sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onepass_whisper.adapters.audio_file import FileAudioSource
from onepass_whisper.adapters.mlx.alignment import DeviceAlignment, dtw_first_frames
from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
from onepass_whisper.adapters.mlx.refill import bucket, buckets
from onepass_whisper.adapters.mlx.step.factory import DeviceBackend
from onepass_whisper.adapters.mlx.step.kernels import KernelProgram
from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import Decoder
from onepass_whisper.domain.windowing import split_into_windows
from tests.integration import kernel_reference

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"
GREEDY = TranscribeOptions(temperatures=(0.0,))


@pytest.fixture(scope="module")
def windows() -> list[Window]:
    samples = FileAudioSource().load(SAMPLE).samples
    windows = split_into_windows(samples, source=0, max_seconds=4.0)
    first = windows[0]
    half = Window(0, len(windows), 0.0, first.samples[: len(first.samples) // 2])  # ends mid-sentence: fewer tokens
    return [*windows, half]


def _decoder(tiny_en: Decoder, kind: str, rows: int | None, alignment: bool = False) -> MlxWhisperDecoder:
    assert isinstance(tiny_en, MlxWhisperDecoder)
    model, heads = tiny_en.model, tiny_en.alignment_heads
    backend: Any = tiny_en.backend
    if kind == "graph":  # the GPU's loop and step on MLX's CPU backend
        backend = DeviceBackend(model, heads, gpu=False)
    elif kind == "kernels":  # the CUDA step over the kernels' MLX-op equivalents
        backend = DeviceBackend(model, heads, KernelProgram(model, heads, kernels=kernel_reference), gpu=False)
    device = DeviceAlignment(7, dtw_first_frames) if alignment else None
    return MlxWhisperDecoder(model, "tiny.en", heads, backend=backend, alignment=device, rows=rows)


def _same(ours: list[DecodedChunk], theirs: list[DecodedChunk]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.window == b.window
        assert [(s.text, s.start, s.end, s.words) for s in a.segments] == [
            (s.text, s.start, s.end, s.words) for s in b.segments
        ]
        assert (a.temperature, a.speech_ended, a.language) == (b.temperature, b.speech_ended, b.language)
        np.testing.assert_allclose(a.token_probabilities, b.token_probabilities, atol=1e-3)
        np.testing.assert_allclose(a.avg_logprob, b.avg_logprob, atol=1e-3)
        np.testing.assert_allclose(a.no_speech_prob, b.no_speech_prob, atol=1e-4)
        assert a.attention.shape == b.attention.shape
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-3)
        if a.token_frames is None or b.token_frames is None:
            assert a.token_frames is b.token_frames is None
        else:
            np.testing.assert_array_equal(a.token_frames, b.token_frames)


@pytest.mark.parametrize("kind", ["host", "graph", "kernels"])
@pytest.mark.parametrize("rows", [1, 3])
def test_refilled_rows_give_each_window_its_own_result(
    tiny_en: Decoder, windows: list[Window], kind: str, rows: int
) -> None:
    together = _decoder(tiny_en, kind, None).decode_batch(windows, GREEDY)
    assert len({len(c.token_probabilities) for c in together}) > 1  # sequences end at different steps
    _same(_decoder(tiny_en, kind, rows).decode_batch(windows, GREEDY), together)


def test_refilled_rows_equal_windows_decoded_alone(tiny_en: Decoder, windows: list[Window]) -> None:
    alone = [tiny_en.decode_batch([w], GREEDY)[0] for w in windows]
    _same(_decoder(tiny_en, "host", 2).decode_batch(windows, GREEDY), alone)


@pytest.mark.parametrize("kind", ["host", "graph"])
def test_rows_kept_on_the_device_are_aligned_at_their_own_steps(
    tiny_en: Decoder, windows: list[Window], kind: str
) -> None:
    """Device alignment: a refilled row's sequence starts at a later step of its column."""
    options = TranscribeOptions(temperatures=(0.0,), word_timestamps=True)
    together = _decoder(tiny_en, kind, None, alignment=True).decode_batch(windows, options)
    assert all(c.token_frames is not None for c in together)
    _same(_decoder(tiny_en, kind, 2, alignment=True).decode_batch(windows, options), together)


@pytest.mark.parametrize("kind", ["host", "graph"])
def test_a_window_that_fails_its_checks_still_falls_back(
    tiny_en: Decoder, windows: list[Window], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    greedy = _decoder(tiny_en, kind, None).decode_batch(windows, GREEDY)
    threshold = float(np.median([c.avg_logprob for c in greedy]))  # about half the windows fail it
    options = TranscribeOptions(temperatures=(0.0, 0.5), logprob_threshold=threshold, no_speech_threshold=None)
    failing = {i for i, c in enumerate(greedy) if c.avg_logprob < threshold}
    assert 0 < len(failing) < len(windows)
    decoder = _decoder(tiny_en, kind, 2)
    sampled: list[int] = []
    decode = decoder._decode

    def spy(features: Any, languages: Any, options: Any, temperature: float, *rest: Any) -> Any:
        assert temperature == 0.5  # the greedy pass is the refilled one
        sampled.append(features.shape[0])
        assert features.shape[0] <= 2
        return decode(features, languages, options, temperature, *rest)

    monkeypatch.setattr(decoder, "_decode", spy)
    chunks = decoder.decode_batch(windows, options)
    assert sum(sampled) == len(failing)  # every failing window decoded again at the next temperature, no other
    for index, (chunk, first) in enumerate(zip(chunks, greedy, strict=True)):
        if index not in failing:
            _same([chunk], [first])
        else:
            assert chunk.temperature in (0.0, 0.5)


def test_the_lagged_loop_steps_at_bucketed_batch_sizes(
    tiny_en: Decoder, windows: list[Window], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = _decoder(tiny_en, "graph", 4)
    backend = decoder.backend
    assert isinstance(backend, DeviceBackend)
    sizes: list[list[int]] = []
    refilled = backend.decode_refilled

    def spy(*args: Any) -> list[int]:
        sizes.append(refilled(*args))
        return sizes[-1]

    monkeypatch.setattr(backend, "decode_refilled", spy)
    decoder.decode_batch(windows, GREEDY)
    assert set(sizes[0]) <= set(buckets(4)) == {4, 2, 1}
    assert sizes[0][0] == 4  # full while windows wait


def test_buckets_are_the_batch_and_its_halvings() -> None:
    assert buckets(16) == [16, 8, 4, 2, 1]
    assert buckets(12) == [12, 6, 3, 1]
    assert [bucket(live, 16) for live in (0, 1, 2, 3, 5, 9, 16)] == [0, 1, 2, 4, 8, 16, 16]
