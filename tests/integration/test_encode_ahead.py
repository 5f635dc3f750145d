"""``encode_ahead`` (a GPU's next batch encoded on a second stream while this one decodes), run on MLX's CPU
backend: a batch whose windows were started ahead decodes to the same words, rows and edge scores as one encoded
when it is decoded, in whatever order its windows come; windows never started are encoded as usual."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onepass_whisper.adapters.audio_file import FileAudioSource
from onepass_whisper.adapters.mlx import load_decoder
from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
from onepass_whisper.adapters.mlx.step.factory import DeviceBackend
from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.windowing import split_into_windows

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"
OPTIONS = TranscribeOptions(temperatures=(0.0,))


def device_flavour(folder: Path, ahead: bool) -> MlxWhisperDecoder:
    loaded = load_decoder(folder, "tiny.en")
    assert isinstance(loaded, MlxWhisperDecoder)
    backend = DeviceBackend(loaded.model, loaded.alignment_heads, gpu=False, ahead=ahead)
    return MlxWhisperDecoder(loaded.model, "tiny.en", loaded.alignment_heads, backend=backend)


@pytest.fixture(scope="module")
def windows() -> list[Window]:
    samples = FileAudioSource().load(SAMPLE).samples
    return split_into_windows(samples, source=0, max_seconds=4.0)[:4]


def same(a: DecodedChunk, b: DecodedChunk) -> None:
    assert [s.text for s in a.segments] == [s.text for s in b.segments]
    np.testing.assert_allclose(a.attention, b.attention, atol=1e-3)  # the encoder batched otherwise: float noise
    assert (a.edge_logits is None) == (b.edge_logits is None)
    if a.edge_logits is not None and b.edge_logits is not None:
        np.testing.assert_allclose(
            a.edge_logits, b.edge_logits, atol=1e-3
        )  # the encoder batched otherwise: float noise


def test_windows_started_ahead_decode_as_windows_encoded_then(tiny_en_folder: Path, windows: list[Window]) -> None:
    plain, ahead = device_flavour(tiny_en_folder, False), device_flavour(tiny_en_folder, True)
    assert not plain.encodes_ahead and ahead.encodes_ahead
    first, second = windows[:2], windows[2:]
    expected = plain.decode_batch(first, OPTIONS) + plain.decode_batch(second[::-1], OPTIONS)
    assert all(chunk.edge_logits is not None for chunk in expected)  # tiny.en has an edge probe: scored too

    ahead.encode_ahead(first, OPTIONS)
    ahead.encode_ahead(second, OPTIONS)  # the next batch's, queued while the first is taken
    got = ahead.decode_batch(first, OPTIONS)
    assert len(ahead._ahead) == 1  # the first taken, the second kept for its call
    got += ahead.decode_batch(second[::-1], OPTIONS)  # another order: rows gathered
    assert not ahead._ahead
    for a, b in zip(expected, got, strict=True):
        same(a, b)


def test_a_batch_not_started_ahead_is_encoded_and_what_was_started_waits(
    tiny_en_folder: Path, windows: list[Window]
) -> None:
    plain, ahead = device_flavour(tiny_en_folder, False), device_flavour(tiny_en_folder, True)
    ahead.encode_ahead(windows[2:], OPTIONS)
    for a, b in zip(plain.decode_batch(windows[:2], OPTIONS), ahead.decode_batch(windows[:2], OPTIONS), strict=True):
        same(a, b)
    assert len(ahead._ahead) == 1  # not its windows: kept for the call that comes for them
    mixed = [windows[0], windows[3]]  # only one of them started: encoded as usual
    for a, b in zip(plain.decode_batch(mixed, OPTIONS), ahead.decode_batch(mixed, OPTIONS), strict=True):
        same(a, b)
