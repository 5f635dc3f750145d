"""On real tiny.en weights: word timing on the device (``DecodedChunk.token_frames`` from ``adapters/mlx/alignment``)
gives the CPU aligner's words and times, on the sample and a few files of the evaluation corpus.

The device stage runs here on MLX's CPU backend (the MLX-op DTW), after either loop: the lagged one (rows kept on
the device, as on a GPU: ``DeviceBackend(gpu=False)``) and the synced one (rows copied over from the host).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onepass_whisper.adapters.audio_file import FileAudioSource
from onepass_whisper.adapters.dtw import DtwAligner, token_frames
from onepass_whisper.adapters.mlx.alignment import DeviceAlignment
from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
from onepass_whisper.adapters.mlx.step.factory import DeviceBackend
from onepass_whisper.domain.audio import FRAME_SECONDS, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.windowing import split_into_windows

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"
EVAL_FILES = ("timit_dev/dr1-fvmh0_sa1.wav", "timit_dev/dr1-fvmh0_si1466.wav", "longform/timit_dev_concat.wav")


@pytest.fixture(scope="module")
def windows(eval_dir: Path) -> list[Window]:
    audio = FileAudioSource()
    found = [SAMPLE, *(eval_dir / name for name in EVAL_FILES)]
    windows: list[Window] = []
    for source, path in enumerate(found):
        windows += split_into_windows(audio.load(path).samples, source=source)[:3]
    return windows


def decoder_on(tiny_en: MlxWhisperDecoder, lagged: bool) -> MlxWhisperDecoder:
    backend = DeviceBackend(tiny_en.model, tiny_en.alignment_heads, gpu=False) if lagged else tiny_en.backend
    return MlxWhisperDecoder(
        tiny_en.model, "tiny.en", tiny_en.alignment_heads, backend=backend, alignment=DeviceAlignment(7)
    )


@pytest.mark.slow
@pytest.mark.parametrize("lagged", [True, False], ids=["lagged", "synced"])
def test_device_word_times_are_the_cpu_aligners(
    tiny_en: MlxWhisperDecoder, windows: list[Window], lagged: bool
) -> None:
    options = TranscribeOptions()
    on_host = tiny_en.decode_batch(windows, options)
    on_device = decoder_on(tiny_en, lagged).decode_batch(windows, options)
    aligner = DtwAligner(refine=True, lag_seconds=0.09)  # about tiny.en's lag
    assert [c.segments for c in on_device] == [c.segments for c in on_host]  # the same decoding
    for host, device in zip(on_host, on_device, strict=True):
        assert device.token_frames is not None and device.attention.size == 0  # no attention crossed over
        expected = token_frames(host.attention, 7)
        assert np.abs(device.token_frames.astype(int) - expected).max(initial=0) <= 1
        host_words = [w for ws in aligner.align(host) for w in ws]
        device_words = [w for ws in aligner.align(device) for w in ws]
        assert [w.text for w in device_words] == [w.text for w in host_words]
        for got, want in zip(device_words, host_words, strict=True):
            assert abs(got.start - want.start) <= FRAME_SECONDS + 1e-6
            assert abs(got.end - want.end) <= FRAME_SECONDS + 1e-6


@pytest.mark.slow
def test_without_word_timestamps_nothing_is_aligned(tiny_en: MlxWhisperDecoder, windows: list[Window]) -> None:
    options = TranscribeOptions(word_timestamps=False)
    chunks = decoder_on(tiny_en, lagged=True).decode_batch(windows[:2], options)
    assert all(c.token_frames is None and c.attention.size > 0 for c in chunks)
