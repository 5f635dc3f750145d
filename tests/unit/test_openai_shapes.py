"""The OpenAI request fields and response shapes of ``app serve``, on a domain transcript."""

from __future__ import annotations

import pytest

from onepass_whisper.domain.errors import InvalidOptionError
from onepass_whisper.domain.model import Segment, TranscribeOptions, Transcript, Word
from onepass_whisper.entrypoints.server import openai_shapes as shapes

TRANSCRIPT = Transcript(
    segments=(
        Segment(0.0, 1.0, " Hello there.", (Word(" Hello", 0.0, 0.4, 0.9), Word(" there.", 0.5, 1.0, 0.8))),
        Segment(1.5, 2.0, " Bye.", (Word(" Bye.", 1.5, 2.0, 0.7),), language="fr", language_probability=0.6),
    ),
    language="en",
    duration=2.25,
    model="tiny.en",
)


def test_verbose_json_carries_what_the_granularities_ask_for() -> None:
    default = shapes.verbose_body(TRANSCRIPT, "transcribe", shapes.granularities([]))
    assert set(default) == {"task", "language", "language_probability", "duration", "text", "segments"}
    assert default["language"] == "english" and default["text"] == "Hello there. Bye."
    assert default["language_probability"] is None  # not detected
    languages = [(s["language"], s["language_probability"]) for s in default["segments"]]
    assert languages == [(None, None), ("french", 0.6)]
    assert default["segments"][1] | {"tokens": []} == default["segments"][1]
    assert [s["id"] for s in default["segments"]] == [0, 1] and default["segments"][1]["seek"] == 150
    words = shapes.verbose_body(TRANSCRIPT, "transcribe", shapes.granularities(["word"]))
    assert "segments" not in words
    assert words["words"] == [
        {"word": "Hello", "start": 0.0, "end": 0.4},
        {"word": "there.", "start": 0.5, "end": 1.0},
        {"word": "Bye.", "start": 1.5, "end": 2.0},
    ]


def test_temperature_zero_keeps_the_fallback_and_a_positive_one_is_fixed() -> None:
    assert shapes.decoding_options("transcribe", None, None, "0").temperatures == TranscribeOptions().temperatures
    assert shapes.decoding_options("transcribe", None, None, None).temperatures == TranscribeOptions().temperatures
    assert shapes.decoding_options("transcribe", "EN ", "Ada", "0.4") == TranscribeOptions(
        language="en", initial_prompt="Ada", temperatures=(0.4,)
    )


@pytest.mark.parametrize("value", ["hot", "1.5", "-0.1"])
def test_a_bad_temperature_names_the_field(value: str) -> None:
    with pytest.raises(InvalidOptionError, match="temperature"):
        shapes.decoding_options("transcribe", None, None, value)


def test_unknown_formats_and_granularities_are_refused() -> None:
    with pytest.raises(InvalidOptionError, match="response_format"):
        shapes.response_format("docx")
    with pytest.raises(InvalidOptionError, match="timestamp_granularities"):
        shapes.granularities(["letter"])
    assert shapes.response_format(None) == "json"


def test_text_srt_and_vtt_are_the_writers_output() -> None:
    assert shapes.subtitle_text(TRANSCRIPT, "text") == "Hello there.\nBye.\n"
    assert shapes.subtitle_text(TRANSCRIPT, "srt").startswith("1\n00:00:00,000 --> 00:00:01,000\nHello there.")
    assert shapes.subtitle_text(TRANSCRIPT, "vtt").startswith("WEBVTT\n\n00:00.000 --> 00:01.000\nHello there.")
