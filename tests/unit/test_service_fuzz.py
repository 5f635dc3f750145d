"""Fuzzing the application service (issue #8): arbitrary audio and arbitrary (in-contract) decoder output.

Hypothesis draws the inputs' lengths (none to 75 s, the 30-s boundaries included), amplitudes (silence to float32's
largest), NaN and ±inf samples, and what the model says about each window (segments anywhere in the 30 s it hears,
the padding after a short window's end included, and any attention). The service runs on fakes and the real
``DtwAligner``. What must hold: no unhandled exception (an empty input is an ``AudioLoadError``, nothing else
fails); every input gets exactly one result; times are finite, ordered and inside the audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.domain.audio import SAMPLE_RATE, WINDOW_SECONDS, ChunkSegment, DecodedChunk, Waveform, Window
from onepass_whisper.domain.errors import AudioLoadError
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from onepass_whisper.domain.ports import BatchProgress
from tests.fakes import FakeAligner, FakeDecoder, InMemoryAudioSource
from tests.strategies import decoded_chunks

WORDS = (" hello", " world", ",", ".", "'s", " ¿", " -")
LENGTHS = st.one_of(  # samples
    st.integers(0, 3 * SAMPLE_RATE),
    st.sampled_from([1, 159, 160, 30 * SAMPLE_RATE - 1, 30 * SAMPLE_RATE, 30 * SAMPLE_RATE + 1, 60 * SAMPLE_RATE]),
    st.integers(3 * SAMPLE_RATE, 35 * SAMPLE_RATE),
)
ROUNDING = 1e-9  # seconds: window offset + time in window may pass the end by an ulp (files keep milliseconds)
TAIL_SECONDS = 0.99  # a segment ending earlier before its window's end has the rest decoded again (a "tail")
AMPLITUDES = st.sampled_from([0.0, 1e-30, 1e-6, 1e-3, 0.3, 1.0, 32768.0, 1e30, 3.4e38])


@st.composite
def waveforms(draw: st.DrawFn) -> Waveform:
    """Noise bursts and pauses at an amplitude, with NaN and ±inf sprinkled or in runs; any length."""
    count = draw(LENGTHS)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    blocks = rng.random(-(-count // 1600)) < draw(st.floats(0.0, 1.0))  # 100-ms blocks switched on at random
    samples = rng.uniform(-1.0, 1.0, count) * np.repeat(blocks, 1600)[:count] * draw(AMPLITUDES)
    if count:
        for value in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=4)):
            start = draw(st.integers(0, count - 1))
            samples[start : start + draw(st.sampled_from([1, 7, 320, 16_000, count]))] = value
    return Waveform(samples.astype(np.float32))


class DrawnDecoder:
    """Says whatever hypothesis draws for each window, within the decoder's contract: segments ordered in time,
    anywhere in the 30 s the model hears (a short window's padding included), any finite attention.

    The last segment ends less than a second before the window's end (or there is none), so the service decodes
    no undecoded tail: the tails are the scripted tests at the end of this module.
    """

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return "drawn"

    @property
    def is_multilingual(self) -> bool:
        return False

    def check_options(self, options: TranscribeOptions) -> None:
        """Takes any options."""

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        return [self._chunk(window) for window in windows]

    def _chunk(self, window: Window) -> DecodedChunk:
        draw = self.data.draw
        times = sorted(draw(st.lists(st.floats(0.0, WINDOW_SECONDS), max_size=6)))
        times = times[: len(times) // 2 * 2]  # (start, end) pairs
        if times:  # the last segment reaches the window's last second (so no tail), or its padding
            times[-1] = draw(st.floats(max(times[-2], window.duration - TAIL_SECONDS), WINDOW_SECONDS))
        segments = []
        for start, end in zip(times[::2], times[1::2]):
            words = tuple(draw(st.lists(st.sampled_from(WORDS), max_size=4)))
            counts = tuple(draw(st.lists(st.integers(1, 3), min_size=len(words), max_size=len(words))))
            segments.append(ChunkSegment(start, end, "".join(words), words, counts))
        tokens = sum(sum(s.word_token_counts) for s in segments)
        frames = window.num_frames
        attention = draw(
            hnp.arrays(np.float32, (1, tokens + 1, frames), elements=st.floats(-30.0, 30.0, width=32))
            if frames <= 64
            else st.builds(_noise, st.just((1, tokens + 1, frames)), st.integers(0, 2**32 - 1))
        )
        return DecodedChunk(
            window=window,
            language="en",
            segments=segments,
            token_probabilities=np.full(tokens, 0.5, np.float32),
            attention=attention,
        )


def _noise(shape: tuple[int, ...], seed: int) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(0.0, 5.0, shape).astype(np.float32)


def check_transcript(transcript: Transcript, samples: int) -> None:
    duration = samples / SAMPLE_RATE
    end = duration + ROUNDING
    assert transcript.duration == pytest.approx(duration)
    for segment in transcript.segments:
        assert 0.0 <= segment.start <= segment.end <= end
    words = [t for w in transcript.words for t in (w.start, w.end)]
    assert all(np.isfinite(words)) and words == sorted(words)
    assert all(0.0 <= t <= end for t in words)
    assert all(0.0 <= w.probability <= 1.0 for w in transcript.words)


def run(service: TranscriptionService, inputs: list[Waveform], options: TranscribeOptions) -> None:
    names = [f"{i}.wav" for i in range(len(inputs))]
    service.audio = InMemoryAudioSource(dict(zip(names, inputs)))
    results = {str(r.source): r for r in service.transcribe_many([Path(n) for n in names], options)}
    assert sorted(results) == sorted(names)  # one result per input, none lost
    for name, waveform in zip(names, inputs):
        result = results[name]
        if len(waveform.samples) == 0:
            assert isinstance(result.error, AudioLoadError) and result.transcript is None
        else:
            assert result.error is None and result.transcript is not None
            check_transcript(result.transcript, len(waveform.samples))


@given(
    inputs=st.lists(waveforms(), min_size=1, max_size=3),
    batch_size=st.integers(1, 4),
    word_timestamps=st.booleans(),
)
def test_any_audio_through_the_fake_model_gives_ordered_times_inside_it(
    inputs: list[Waveform], batch_size: int, word_timestamps: bool
) -> None:
    service = TranscriptionService(InMemoryAudioSource({}), FakeDecoder(), FakeAligner(), batch_size=batch_size)
    run(service, inputs, TranscribeOptions(word_timestamps=word_timestamps))


@given(
    inputs=st.lists(waveforms(), min_size=1, max_size=3),
    batch_size=st.integers(1, 4),
    data=st.data(),
)
def test_any_decoder_output_with_the_real_aligner_gives_word_times_inside_the_audio(
    inputs: list[Waveform], batch_size: int, data: st.DataObject
) -> None:
    service = TranscriptionService(InMemoryAudioSource({}), DrawnDecoder(data), DtwAligner(), batch_size=batch_size)
    run(service, inputs, TranscribeOptions(word_timestamps=True))


@given(samples=hnp.arrays(np.float32, st.integers(0, 4000), elements=st.floats(width=32)), data=st.data())
def test_any_float32_samples_at_all(samples: NDArray[np.float32], data: st.DataObject) -> None:
    """Every float32 value, NaN and ±inf included, element by element (short inputs)."""
    service = TranscriptionService(InMemoryAudioSource({}), DrawnDecoder(data), DtwAligner(), batch_size=2)
    run(service, [Waveform(samples)], TranscribeOptions())


# --- the undecoded tail (application/transcription.py, the lead's): two bugs, each shown with a fixed decoder ---


class ScriptedDecoder:
    """Says ``first`` in a window at offset 0 and ``later`` in any other (a tail), with attention that puts each
    word at ``(start, end)`` seconds of its window; stops the test after 20 windows instead of looping forever.
    ``first`` stops early (no closing lone timestamp: the rest is undecoded); ``later`` closes its window."""

    def __init__(
        self,
        first: ChunkSegment,
        first_at: list[tuple[float, float]],
        later: ChunkSegment | None,
        later_at: list[tuple[float, float]],
    ) -> None:
        self.script = ((first, first_at), (later, later_at))
        self.windows = 0

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def is_multilingual(self) -> bool:
        return False

    def check_options(self, options: TranscribeOptions) -> None:
        """Takes any options."""

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        chunks = []
        for window in windows:
            self.windows += 1
            if self.windows > 20:
                raise RuntimeError("20 windows decoded for one 10-s input: the service does not stop")
            segment, at = self.script[0 if window.offset == 0 else 1]
            rows = [*at, (at[-1][1] if at else 0.0, window.duration)]  # the words, then end-of-text
            attention = np.full((1, len(rows), window.num_frames), -10.0, np.float32)
            for row, (start, end) in enumerate(rows):
                lo = min(round(start / 0.02), window.num_frames - 1)
                attention[0, row, lo : max(round(end / 0.02), lo + 1)] = 10.0
            segments = () if segment is None else (segment,)
            chunks.append(
                DecodedChunk(
                    window=window,
                    language="en",
                    segments=segments,
                    token_probabilities=np.full(len(at), 0.9, np.float32),
                    attention=attention,
                    speech_ended=window.offset != 0,
                )
            )
        return chunks


def _tone(seconds: float) -> Waveform:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return Waveform((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def test_a_segment_ending_at_the_windows_start_does_not_loop() -> None:
    you = ChunkSegment(0.0, 0.0, " you", (" you",), (1,))
    decoder = ScriptedDecoder(you, [(0.0, 0.0)], you, [(0.0, 0.0)])
    service = TranscriptionService(InMemoryAudioSource({"a.wav": _tone(10.0)}), decoder, DtwAligner(refine=False))
    transcript = service.transcribe(Path("a.wav"), TranscribeOptions())
    assert transcript.text == "you"


def test_words_of_a_window_and_of_its_tail_stay_in_order() -> None:
    first = ChunkSegment(0.0, 2.0, " hello world", (" hello", " world"), (1, 1))  # its words are at 5-7 s
    later = ChunkSegment(0.0, 1.0, " again", (" again",), (1,))
    decoder = ScriptedDecoder(first, [(5.0, 6.0), (6.0, 7.0)], later, [(0.0, 1.0)])
    # sound until 8.5 s: "again" (7-8 s) leaves less than a second of it, so its window has no tail of its own
    audio = Waveform(np.concatenate([_tone(8.5).samples, np.zeros(round(1.5 * SAMPLE_RATE), np.float32)]))
    service = TranscriptionService(InMemoryAudioSource({"a.wav": audio}), decoder, DtwAligner(refine=False))
    transcript = service.transcribe(Path("a.wav"), TranscribeOptions())
    assert [w.text for w in transcript.words] == [" hello", " world", " again"]
    times = [t for w in transcript.words for t in (w.start, w.end)]
    assert times == sorted(times), times


@given(chunk=decoded_chunks(extreme=True), nan_at=st.lists(st.integers(0, 10**6), max_size=8), refine=st.booleans())
def test_the_aligner_on_any_attention_nan_included(chunk: DecodedChunk, nan_at: list[int], refine: bool) -> None:
    """``tests/unit/test_aligner.py`` draws finite and infinite attention; a model gone wrong may give NaN too."""
    attention = chunk.attention.copy()
    if attention.size:
        attention.flat[[i % attention.size for i in nan_at]] = np.nan
    chunk = evolve(chunk, attention=attention)
    words = [w for segment in DtwAligner(refine=refine).align(chunk) for w in segment]
    times = [t for w in words for t in (w.start, w.end)]
    assert all(np.isfinite(times)) and times == sorted(times)
    assert all(0.0 <= t <= chunk.window.duration for t in times)
