"""The no-speech rule (application.no_speech) on fake chunks, and the service dropping what it calls silent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from attrs import evolve

from onepass_whisper.application.no_speech import heard_no_speech, without_speech, words_logprob
from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import BatchProgress
from tests.fakes import FakeAligner, FakeDecoder, InMemoryAudioSource, tone


def chunk(no_speech_prob: float, avg_logprob: float, probabilities: Sequence[float]) -> DecodedChunk:
    window = Window(source=0, index=0, offset=0.0, samples=np.zeros(16000, np.float32))
    base = FakeDecoder("you").decode_batch([evolve(window, samples=tone(1.0).samples)], TranscribeOptions())[0]
    return evolve(
        base,
        no_speech_prob=no_speech_prob,
        avg_logprob=avg_logprob,
        token_probabilities=np.array(probabilities, np.float32),
    )


def test_a_confident_average_does_not_hide_an_unsure_word() -> None:
    """tiny.en on digital silence: 'you' at 0.17 among near-certain timestamps, no-speech 0.95, average -0.70."""
    assert words_logprob(chunk(0.95, -0.70, [0.17])) == pytest.approx(np.log(0.17))
    assert heard_no_speech(chunk(0.95, -0.70, [0.17]), TranscribeOptions())


@pytest.mark.parametrize(
    ("no_speech_prob", "avg_logprob", "probabilities", "silent"),
    [
        (0.95, -0.30, [0.9, 0.8, 0.95], False),  # the model is sure of the words: kept whatever no-speech says
        (0.30, -2.00, [0.1, 0.1], False),  # the model hears speech: kept, however unsure (fallback's business)
        (0.95, -1.50, [0.9], True),  # openai-whisper's own rule
        (0.61, -0.50, [0.5, 0.2], True),  # words' mean log probability -1.15 < -1
        (float("nan"), -3.0, [0.01], False),  # a model without a no-speech token: never silent
    ],
)
def test_the_rule(no_speech_prob: float, avg_logprob: float, probabilities: list[float], silent: bool) -> None:
    assert heard_no_speech(chunk(no_speech_prob, avg_logprob, probabilities), TranscribeOptions()) is silent


@pytest.mark.parametrize("off", [{"no_speech_threshold": None}, {"logprob_threshold": None}])
def test_either_threshold_off_turns_the_rule_off(off: dict[str, None]) -> None:
    assert not heard_no_speech(chunk(0.99, -3.0, [0.01]), TranscribeOptions(**off))  # type: ignore[arg-type]


class HallucinatingDecoder(FakeDecoder):
    """Says 'you' in every window, as tiny.en does on silence: sure of nothing but the timestamps."""

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        chunks = super().decode_batch(windows, options)
        return [
            evolve(c, no_speech_prob=0.95, avg_logprob=-0.70, token_probabilities=np.full(1, 0.17, np.float32))
            for c in chunks
        ]


@pytest.mark.parametrize("batch_size", [1, 16])
def test_the_service_drops_the_words_of_a_window_that_heard_no_speech(batch_size: int) -> None:
    service = TranscriptionService(
        audio=InMemoryAudioSource({"a.wav": tone(65.0)}),
        decoder=HallucinatingDecoder("you"),
        aligner=FakeAligner(),
        batch_size=batch_size,
    )
    transcript = service.transcribe(Path("a.wav"), TranscribeOptions())
    assert transcript.text == "" and transcript.segments == () and transcript.duration == pytest.approx(65.0)
    kept = service.transcribe(Path("a.wav"), TranscribeOptions(no_speech_threshold=None))
    assert kept.text != ""


def test_the_server_s_scheduler_drops_them_too() -> None:
    """A request to ``app serve`` gets the same (empty) words for silence as ``app transcribe``."""
    with BatchScheduler(lambda: HallucinatingDecoder("you"), FakeAligner()) as scheduler:
        transcript = scheduler.submit(tone(40.0), TranscribeOptions()).future.result(30.0)
    assert transcript.text == "" and transcript.segments == ()


def test_dropping_the_words_keeps_end_of_text_s_frame_computed_on_the_device() -> None:
    decoded = chunk(0.95, -0.70, [0.17])
    frames = np.arange(decoded.token_count + 1, dtype=np.int32) + 5
    silent = without_speech(evolve(decoded, attention=np.zeros((0, 0, 0), np.float32), token_frames=frames))
    assert silent.token_frames is not None and silent.token_frames.tolist() == [frames[-1]]
    assert silent.token_count == 0
