"""The ports' contracts, one set of assertions for the fakes the unit tests stand on and the real adapters:
what a fake promises, the adapter keeps (``../shared/STYLE.md``). ``Decoder``: ``FakeDecoder`` and the embedded
tiny.en on MLX; ``Aligner``: ``FakeAligner`` and the DTW aligner over the same decoded windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onepass_whisper.domain.audio import SAMPLE_RATE, DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import Aligner, Decoder
from tests.fakes import FakeAligner, FakeDecoder

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"


@pytest.fixture(scope="module")
def windows() -> list[Window]:
    import soundfile

    speech, rate = soundfile.read(SAMPLE, dtype="float32")
    assert rate == SAMPLE_RATE
    speech = speech[: 8 * SAMPLE_RATE]
    silence = np.zeros(3 * SAMPLE_RATE, np.float32)
    return [Window(0, 0, 0.0, speech), Window(1, 0, 0.0, silence), Window(0, 1, 8.0, speech[: 4 * SAMPLE_RATE])]


@pytest.fixture(params=["fake", "mlx"])
def decoder(request: pytest.FixtureRequest) -> Decoder:
    if request.param == "fake":
        return FakeDecoder()
    tiny_en: Decoder = request.getfixturevalue("tiny_en")
    return tiny_en


@pytest.fixture(params=["fake", "dtw"])
def aligner(request: pytest.FixtureRequest) -> Aligner:
    if request.param == "fake":
        return FakeAligner()
    from onepass_whisper.adapters.dtw import DtwAligner

    return DtwAligner(median_width=7)


def test_a_decoder_keeps_the_ports_contract(decoder: Decoder, windows: list[Window]) -> None:
    assert decoder.decode_batch([], TranscribeOptions()) == []
    chunks = decoder.decode_batch(windows, TranscribeOptions())
    assert [chunk.window for chunk in chunks] == windows  # one chunk a window, in order
    for chunk in chunks:
        _assert_chunk(chunk)
    assert chunks[0].segments  # speech is transcribed
    assert chunks[1].no_speech_prob > chunks[0].no_speech_prob  # silence is the likelier no-speech


def test_an_aligner_keeps_the_ports_contract(aligner: Aligner, windows: list[Window]) -> None:
    for chunk in FakeDecoder("one two three").decode_batch(windows, TranscribeOptions()):
        timed = aligner.align(chunk)
        assert len(timed) == len(chunk.segments)  # one tuple of words a segment
        for segment, words in zip(chunk.segments, timed, strict=True):
            assert [w.text.strip() for w in words] == [w.strip() for w in segment.words]
            starts = [w.start for w in words]
            assert starts == sorted(starts)
            assert all(0.0 <= w.start <= w.end <= chunk.window.duration + 1e-6 for w in words)
            assert all(0.0 <= w.probability <= 1.0 for w in words)


def _assert_chunk(chunk: DecodedChunk) -> None:
    duration = chunk.window.duration
    for segment in chunk.segments:
        assert 0.0 <= segment.start <= segment.end <= duration + 1e-6
        assert len(segment.words) == len(segment.word_token_counts)
    heads, rows, frames = chunk.attention.shape
    assert heads >= 1 and rows == chunk.token_count + 1 and frames == chunk.window.num_frames
    assert chunk.token_probabilities.shape == (chunk.token_count,)
    assert 0.0 <= chunk.no_speech_prob <= 1.0
