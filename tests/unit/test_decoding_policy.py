"""Whisper's decoding policy (``domain/decoding.py``), without MLX: the fallback and silence rules, the compression
ratio, and the undecoded-tail rule that the decoder and the service share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onepass_whisper.domain.audio import SAMPLE_RATE, ChunkSegment, DecodedChunk, Window
from onepass_whisper.domain.decoding import (
    CONTINUE_SECONDS,
    best_attempt,
    compression_ratio,
    finish_until,
    is_silent,
    may_have_undecoded_tail,
    needs_fallback,
    undecoded_tail,
)
from onepass_whisper.domain.model import TranscribeOptions

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
    ended = DecodedChunk(
        window, "en", (segment,), np.zeros(1, np.float32), np.zeros((1, 2, 10), np.float32), speech_ended=True
    )
    assert not may_have_undecoded_tail(ended)  # the model said the speech ended


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
