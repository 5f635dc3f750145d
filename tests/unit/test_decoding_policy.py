"""Whisper's decoding policy (``domain/decoding.py``), without MLX: the fallback and silence rules, the compression
ratio, and the undecoded-tail rule that the decoder and the service share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE, ChunkSegment, DecodedChunk, Window
from onepass_whisper.domain.decoding import (
    CONTINUE_SECONDS,
    MAX_TAIL_DEPTH,
    ONSET_MARGIN_SECONDS,
    best_attempt,
    compression_ratio,
    finish_until,
    is_hallucination,
    is_silent,
    may_have_undecoded_tail,
    needs_fallback,
    settle_tail,
    sound_after,
    undecoded_tail,
    word_anomaly,
)
from onepass_whisper.domain.model import Segment, TranscribeOptions, Word

REPO = Path(__file__).resolve().parents[2]


def test_the_policy_needs_no_mlx() -> None:
    code = "import sys, domain.decoding; print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_whisper')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


def test_compression_ratio_rises_with_repetition() -> None:
    assert compression_ratio("") == 0.0
    assert compression_ratio("the cat " * 40) > 2.4 > compression_ratio("a quick brown fox jumps over the lazy dog")


@pytest.mark.parametrize(
    ("text", "no_speech", "logprob", "expected"),
    [
        ("a quick brown fox", 0.1, -0.5, False),  # fine
        ("the cat " * 40, 0.1, -0.5, True),  # too repetitive
        ("a quick brown fox", 0.1, -1.5, True),  # too unlikely
        ("a quick brown fox", 0.9, -1.5, False),  # silence: skipped, not retried
    ],
)
def test_fallback_follows_openai_whispers_rule(text: str, no_speech: float, logprob: float, expected: bool) -> None:
    assert needs_fallback(text, no_speech, logprob, TranscribeOptions()) is expected


def test_silence_needs_a_high_no_speech_probability_and_an_unlikely_text() -> None:
    options = TranscribeOptions()
    assert is_silent(0.9, -1.5, options)
    assert not is_silent(0.9, -0.5, options)  # likely text overrules the no-speech probability
    assert not is_silent(0.1, -1.5, options)


def _window(seconds: float, sound_until: float) -> Window:
    samples = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    t = np.arange(int(sound_until * SAMPLE_RATE)) / SAMPLE_RATE
    samples[: len(t)] = 0.3 * np.sin(2 * np.pi * 220 * t)
    return Window(0, 0, 0.0, samples)


def test_a_segment_must_be_finished_while_more_than_a_second_of_sound_follows() -> None:
    assert finish_until(_window(20.0, 12.0)) == pytest.approx(12.0 - CONTINUE_SECONDS, abs=0.1)
    assert finish_until(_window(20.0, 0.0)) <= 0.0  # silence: nothing to finish


def test_the_service_decodes_a_tail_the_decoder_left() -> None:
    window = _window(20.0, 20.0)
    segment = ChunkSegment(0.0, 10.0, " hello", (" hello",), (1,))
    chunk = DecodedChunk(window, "en", (segment,), np.zeros(1, np.float32), np.zeros((1, 2, 10), np.float32))
    assert may_have_undecoded_tail(chunk)
    tail = undecoded_tail(chunk, ())
    assert tail is not None and tail.offset == pytest.approx(10.0) and tail.duration == pytest.approx(10.0)
    assert tail.tail_depth == 1


def _chunk(window: Window, end: float, speech_ended: bool = True) -> DecodedChunk:
    segment = ChunkSegment(0.0, end, " hello", (" hello",), (1,))
    attention = np.zeros((1, 2, window.num_frames), np.float32)
    return DecodedChunk(window, "en", (segment,), np.zeros(1, np.float32), attention, speech_ended=speech_ended)


def _speech_then(rest: NDArray[np.float32], speech: float = 5.0, pause: float = 2.0) -> Window:
    """A tone of ``speech`` seconds, ``pause`` seconds of silence, then ``rest``."""
    t = np.arange(int(speech * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    return Window(0, 0, 10.0, np.concatenate([tone, np.zeros(int(pause * SAMPLE_RATE)), rest]))


def _sine(seconds: float, amplitude: float = 0.3, hz: float = 330.0) -> NDArray[np.float32]:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_sound_after_a_lone_timestamp_is_a_tail_from_shortly_before_it() -> None:
    """The language change: the model closed the first sentence with a lone timestamp, and another follows."""
    window = _speech_then(_sine(5.0))
    chunk = _chunk(window, 5.0, speech_ended=True)
    assert may_have_undecoded_tail(chunk)
    word = Segment(10.0, 15.0, " hello", (Word(" hello", 10.5, 14.9, 0.9),))  # file times
    tail = undecoded_tail(chunk, [word])
    assert tail is not None
    onset = 10.0 + 7.0 - 0.11  # the smoothed level rises 110 ms before the sound
    assert tail.offset == pytest.approx(onset - ONSET_MARGIN_SECONDS, abs=0.03)
    assert tail.end == window.end and tail.tail_depth == 1 and tail.index == window.index


@pytest.mark.parametrize(
    "rest",
    [
        np.zeros(5 * SAMPLE_RATE, np.float32),  # silence
        _sine(5.0, amplitude=0.3 * 10 ** (-40 / 20)),  # a hum 40 dB under the speech
        _sine(0.7),  # a word too short to hold a sentence (and the smoothing's 220 ms)
    ],
    ids=["silence", "quiet hum", "short sound"],
)
def test_no_tail_where_the_audio_holds_no_second_of_sound_after_the_last_word(rest: NDArray[np.float32]) -> None:
    chunk = _chunk(_speech_then(rest), 5.0)
    assert not may_have_undecoded_tail(chunk)
    assert undecoded_tail(chunk, ()) is None


def test_a_tail_needs_progress_and_ends_after_max_tail_depth_cuts() -> None:
    window = _speech_then(_sine(5.0))
    assert undecoded_tail(_chunk(window, 0.0), ()) is None  # nothing decoded: not decoded again
    deep = attrs.evolve(window, tail_depth=MAX_TAIL_DEPTH)
    assert not may_have_undecoded_tail(_chunk(deep, 5.0))
    assert undecoded_tail(_chunk(deep, 5.0), ()) is None
    no_words = attrs.evolve(_chunk(window, 5.0), segments=())
    assert not may_have_undecoded_tail(no_words) and undecoded_tail(no_words, ()) is None


def test_sound_after_counts_sound_frames_from_a_time_on() -> None:
    window = _speech_then(_sine(3.0), speech=5.0, pause=2.0)
    sound, onset = sound_after(window, 5.5)
    assert sound == pytest.approx(3.0 + 0.11, abs=0.05)
    assert onset == pytest.approx(7.0 - 0.11, abs=0.03)
    assert sound_after(window, 11.0) == (0.0, window.duration)


def test_when_every_temperature_fails_the_likeliest_fluent_attempt_is_kept() -> None:
    """faster-whisper's choice, not openai-whisper's last attempt: the French file that scored -1.22 at
    temperature 0 kept its garbage from temperature 1.0 (seven zero-length cues)."""
    repetitive = "la la la la la la la la la la la la la la la la la la la la la la la la la la la la"
    attempts = [("Bonjour, je suis ici.", -1.22), (repetitive, -0.4), ("Bon jour je suis si", -1.5), ("x y", -2.9)]
    assert best_attempt(attempts, TranscribeOptions()) == 0  # the repetitive one is likelier, but not fluent
    assert best_attempt([(repetitive, -0.9), (repetitive + " la", -0.5)], TranscribeOptions()) == 1  # none fluent
    unlimited = TranscribeOptions(compression_ratio_threshold=None)
    assert best_attempt(attempts, unlimited) == 1
    with pytest.raises(ValueError):
        best_attempt([], TranscribeOptions())


def _segment(*words: tuple[str, float, float, float]) -> Segment:
    timed = tuple(Word(text, start, end, probability) for text, start, end, probability in words)
    return Segment(timed[0].start, timed[-1].end, "".join(w.text for w in timed), timed)


def test_a_hallucination_is_judged_as_openai_whisper_judges_one() -> None:
    assert word_anomaly(Word(" a", 0.0, 0.5, 0.9)) == 0.0
    assert word_anomaly(Word(" a", 0.0, 0.5, 0.1)) == 1.0  # unlikely
    assert word_anomaly(Word(" a", 0.0, 3.0, 0.9)) == pytest.approx(1.0)  # a second too long
    assert word_anomaly(Word(" et", 0.0, 0.02, 0.9)) == 0.0  # short: our refined edges give such words
    # base over music after a sentence: " Thank you.", the first word at 0.01, the second 5 s long
    assert is_hallucination(_segment((" Thank", 6.9, 7.7, 0.01), (" you.", 7.7, 12.8, 0.95)))
    speech = _segment((" La", 7.0, 7.2, 0.46), (" mañana", 7.2, 7.4, 0.77), (" fuimos", 7.4, 7.8, 0.96))
    assert not is_hallucination(speech)
    assert not is_hallucination(_segment((" ,", 0.0, 0.01, 0.01), (" yes", 0.01, 0.4, 0.9)))  # punctuation aside
    assert not is_hallucination(Segment(0.0, 1.0, " hello"))  # no timed words: not judged


def test_a_tail_that_is_a_hallucination_keeps_nothing_and_has_no_tail() -> None:
    window = attrs.evolve(_speech_then(_sine(5.0)), tail_depth=1)
    chunk = _chunk(window, 5.0, speech_ended=False)
    thanks = _segment((" Thank", 10.0, 10.8, 0.01), (" you.", 10.8, 15.0, 0.95))
    assert settle_tail(chunk, [thanks]) == ([], None)
    fine = _segment((" hello", 14.0, 14.5, 0.9), (" there", 14.5, 14.99, 0.9))
    kept, rest = settle_tail(chunk, [fine])
    assert kept == [fine] and rest is not None and rest.tail_depth == 2
    first = attrs.evolve(chunk, window=attrs.evolve(window, tail_depth=0))  # a window cut from the input
    assert settle_tail(first, [thanks])[0] == [thanks]  # is not judged
