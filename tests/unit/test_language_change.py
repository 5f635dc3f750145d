"""Speech after a language change (issue 26 item 1), with fakes: the model stops at the change with a lone
timestamp; the audio shows more speech, which the service and the server's scheduler decode again as a window of
its own, its language detected afresh, batched with the other pending windows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from attrs import evolve

from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.domain.audio import SAMPLE_RATE, ChunkSegment, DecodedChunk, Waveform, Window
from onepass_whisper.domain.decoding import MAX_TAIL_DEPTH
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from onepass_whisper.domain.ports import BatchProgress
from tests.fakes import FakeAligner, InMemoryAudioSource, LanguageSwitchingDecoder, pitched

EN, FR = 220, 330  # Hz: the fake's English and French
EN_FR = pitched((0.3, 0), (4.0, EN), (2.0, 0), (5.0, FR), (0.5, 0))  # French at 6.3-11.3 s
WAIT = 10.0


def transcribe(waveform: Waveform, decoder: LanguageSwitchingDecoder, language: str | None = None) -> Transcript:
    audio = InMemoryAudioSource({"a.wav": waveform})
    service = TranscriptionService(audio=audio, decoder=decoder, aligner=FakeAligner())
    return service.transcribe(Path("a.wav"), TranscribeOptions(language=language))


def words(transcript: Transcript) -> list[tuple[str, float, float]]:
    """Each run of one word (the fake says its word once a second): the word, its first start and last end."""
    runs: list[tuple[str, float, float]] = []
    for w in transcript.words:
        if runs and runs[-1][0] == w.text.strip():
            runs[-1] = (runs[-1][0], runs[-1][1], round(w.end, 2))
        else:
            runs.append((w.text.strip(), round(w.start, 2), round(w.end, 2)))
    return runs


def test_speech_after_a_language_change_is_decoded_with_its_own_language() -> None:
    decoder = LanguageSwitchingDecoder()
    transcript = transcribe(EN_FR, decoder)
    assert [text for text, _, _ in words(transcript)] == ["hello", "bonjour"]
    _, start, end = words(transcript)[1]
    assert 6.0 <= start <= 6.4 and end == pytest.approx(11.3, abs=0.01)  # the French sentence's span
    assert decoder.languages == ["en", "fr"]  # the tail's language detected afresh
    assert [len(batch) for batch in decoder.windows] == [1, 1]
    assert decoder.windows[1][0][1] == pytest.approx(6.3 - 0.11 - 0.2, abs=0.03)  # shortly before the French


def test_a_forced_language_loses_nothing_either() -> None:
    decoder = LanguageSwitchingDecoder()
    transcript = transcribe(EN_FR, decoder, language="fr")
    assert [text for text, _, _ in words(transcript)] == ["hello", "bonjour"]
    assert decoder.languages == ["fr", "fr"]


def test_each_change_of_language_in_a_window_gets_a_tail() -> None:
    waveform = pitched((0.3, 0), (3.0, EN), (2.0, 0), (3.0, FR), (2.0, 0), (3.0, EN), (2.0, 0), (3.0, FR))
    decoder = LanguageSwitchingDecoder()
    transcript = transcribe(waveform, decoder)
    assert [text for text, _, _ in words(transcript)] == ["hello", "bonjour", "hello", "bonjour"]
    assert decoder.languages == ["en", "fr", "en", "fr"]


def test_silence_after_the_change_point_is_not_decoded_again() -> None:
    decoder = LanguageSwitchingDecoder()
    transcript = transcribe(pitched((0.3, 0), (4.0, EN), (20.0, 0)), decoder)
    assert [text for text, _, _ in words(transcript)] == ["hello"]
    assert [len(batch) for batch in decoder.windows] == [1]


def test_a_tail_is_batched_with_the_other_pending_windows() -> None:
    """No sequential fallback: the tail goes first into the next batch, beside the other inputs' windows."""
    long = pitched((95.0, EN))  # four windows
    audio = InMemoryAudioSource({"a.wav": EN_FR, "b.wav": long})
    decoder = LanguageSwitchingDecoder()
    service = TranscriptionService(audio=audio, decoder=decoder, aligner=FakeAligner(), batch_size=4)
    results = {str(r.source): r for r in service.transcribe_many([Path("a.wav"), Path("b.wav")], TranscribeOptions())}
    assert decoder.windows[0] == [(0, 0.0), (1, 0.0), (1, 30.0), (1, 60.0)]
    assert decoder.windows[1][0][0] == 0 and decoder.windows[1][1] == (1, 90.0)  # a's tail, then b's last window
    transcript = results["a.wav"].transcript
    assert transcript is not None and [text for text, _, _ in words(transcript)] == ["hello", "bonjour"]


class OneWordPerWindow(LanguageSwitchingDecoder):
    """Says one word in the first 0.2 s of every window and stops (a model stuck on a long noise)."""

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        chunks = super().decode_batch(windows, options, progress)
        one = ChunkSegment(0.0, 0.2, " hello", (" hello",), (1,))
        return [evolve(c, segments=[one], token_probabilities=c.token_probabilities[:1]) for c in chunks]


def test_re_decoding_ends_after_max_tail_depth_cuts() -> None:
    decoder = OneWordPerWindow()
    transcript = transcribe(pitched((25.0, EN)), decoder)
    assert len(decoder.windows) == 1 + MAX_TAIL_DEPTH
    assert len(transcript.words) == 1 + MAX_TAIL_DEPTH


def test_the_scheduler_decodes_the_tail_as_the_service_does() -> None:
    expected = transcribe(EN_FR, LanguageSwitchingDecoder())
    decoder = LanguageSwitchingDecoder()
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=4, gather_seconds=0.0) as scheduler:
        got = scheduler.submit(EN_FR, TranscribeOptions()).future.result(WAIT)
    assert got == expected
    assert decoder.languages == ["en", "fr"]


def test_the_fake_hears_the_pitches() -> None:
    assert LanguageSwitchingDecoder.bursts(EN_FR.samples) == [(0.3, 4.3, EN), (6.3, 11.3, FR)]
    assert LanguageSwitchingDecoder.bursts(np.zeros(SAMPLE_RATE, np.float32)) == []


class HallucinatingTails(LanguageSwitchingDecoder):
    """Says " Thank you." over the whole of any tail window's first burst, as base does over music after a
    sentence: two words over seconds (FakeAligner spreads them over the segment)."""

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        chunks = super().decode_batch(windows, options, progress)
        thanks = (" Thank", " you.")
        return [
            evolve(c, segments=[evolve(c.segments[0], text="".join(thanks), words=thanks, word_token_counts=(1, 1))])
            if c.window.tail_depth and c.segments
            else c
            for c in chunks
        ]


def test_a_tail_whose_first_segment_is_a_hallucination_keeps_no_words() -> None:
    decoder = HallucinatingTails()
    transcript = transcribe(pitched((0.3, 0), (4.0, EN), (2.0, 0), (9.0, FR)), decoder)  # its words 4.5 s long
    assert [text for text, _, _ in words(transcript)] == ["hello"]
    assert len(decoder.windows) == 2  # decoded, judged, and not decoded again
