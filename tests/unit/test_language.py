"""A transcript's language (that of most of its speech) and its doubts, from the rules to the CLI's warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.domain.audio import Waveform, Window
from onepass_whisper.domain.language import (
    NOT_ENGLISH_LOGPROB,
    UNCERTAIN_LANGUAGE,
    SpokenLanguage,
    doubts,
    main_language,
    transcript_of,
)
from onepass_whisper.domain.model import Doubt, Segment, TranscribeOptions
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.fakes import FakeAligner, FakeDecoder, InMemoryAudioSource, tone


def segment(
    start: float,
    end: float,
    language: str = "",
    probability: float | None = None,
    avg_logprob: float = 0.0,
    compression_ratio: float = 1.0,
) -> Segment:
    return Segment(
        start,
        end,
        " words",
        avg_logprob=avg_logprob,
        compression_ratio=compression_ratio,
        language=language,
        language_probability=probability,
    )


def test_the_language_is_that_of_most_of_the_speech_not_of_most_windows() -> None:
    """Three short windows in German do not outvote one long one in French (the count of windows did)."""
    segments = [segment(0, 25, "fr", 0.9), segment(25, 26, "de", 0.4), segment(26, 27, "de", 0.5)]
    segments.append(segment(27, 28, "de", 0.5))
    assert main_language(segments) == SpokenLanguage("fr", 0.9)


def test_the_probability_is_that_of_the_language_chosen_weighed_by_duration() -> None:
    spoken = main_language([segment(0, 3, "fr", 0.9), segment(3, 4, "fr", 0.5), segment(4, 5, "de", 0.99)])
    assert spoken is not None and spoken.code == "fr" and spoken.probability == pytest.approx(0.8)


def test_no_detection_gives_no_probability_and_no_language_gives_none() -> None:
    assert main_language([segment(0, 1, "en")]) == SpokenLanguage("en", None)
    assert main_language([segment(0, 1)]) is None
    assert main_language([]) is None


def test_doubts_name_each_case_and_nothing_on_clear_speech() -> None:
    clear = [segment(0, 5, "fr", 0.95, avg_logprob=-0.3)]
    assert doubts(clear, "fr", 0.95, english_only=False) == ()
    assert doubts([], "th", None, english_only=False) == (Doubt("no_speech", "th"),)
    low = UNCERTAIN_LANGUAGE - 0.01
    assert doubts(clear, "th", low, english_only=False) == (Doubt("uncertain_language", "th", low),)
    garbled = [segment(0, 5, "en", avg_logprob=NOT_ENGLISH_LOGPROB - 0.2)]
    [doubt] = doubts(garbled, "en", None, english_only=True)
    assert doubt.kind == "not_english" and doubt.score == pytest.approx(NOT_ENGLISH_LOGPROB - 0.2)
    assert doubts(garbled, "en", None, english_only=False) == ()  # a multilingual model's own language says it


def test_an_english_only_model_looping_on_one_phrase_is_doubted_too() -> None:
    """tiny.en on Japanese: a confident loop ('Chinese letter, Chinese letter, ...') that failed the compression
    test at every temperature."""
    loop = [segment(0, 5, "en", avg_logprob=-0.3, compression_ratio=9.0), segment(5, 6, "en", avg_logprob=-0.3)]
    assert [d.kind for d in doubts(loop, "en", None, english_only=True, compression_limit=2.4)] == ["not_english"]
    assert doubts(loop, "en", None, english_only=True, compression_limit=None) == ()


def test_transcript_of_falls_back_to_the_language_asked_for() -> None:
    transcript = transcript_of([], 3.0, model="m", fallback_language="de", english_only=False)
    assert transcript.language == "de" and transcript.language_probability is None
    assert transcript.doubts == (Doubt("no_speech", "de"),)


def by_offset(window: Window) -> tuple[str, float]:
    return ("fr", 0.9) if window.offset < 30 else ("de", 0.4)


def test_the_service_gives_each_segment_its_window_s_language() -> None:
    decoder = FakeDecoder(multilingual=True, detect=by_offset)
    service = TranscriptionService(InMemoryAudioSource({"a.wav": tone(45.0)}), decoder, FakeAligner())
    transcript = service.transcribe(Path("a.wav"), TranscribeOptions())
    assert [(s.language, s.language_probability) for s in transcript.segments] == [("fr", 0.9), ("de", 0.4)]
    assert transcript.language == "fr" and transcript.language_probability == pytest.approx(0.9)
    forced = service.transcribe(Path("a.wav"), TranscribeOptions(language="de"))
    assert {(s.language, s.language_probability) for s in forced.segments} == {("de", None)}
    assert forced.language_probability is None and forced.doubts == ()


@pytest.mark.parametrize(
    ("decoder", "audio", "expected"),
    [
        (
            FakeDecoder(multilingual=True, detect=lambda _: ("th", 0.3)),
            tone(2.0),
            "its language was detected as Thai (th) with probability 0.30 only; if that is wrong, give it with"
            " --language",
        ),
        (FakeDecoder(multilingual=True, detect=lambda _: ("th", 0.3)), tone(2.0, 0.0), "no speech found"),
        (
            FakeDecoder(name="tiny.en", avg_logprob=-1.5),
            tone(2.0),
            "the speech does not score as English for the English-only model tiny.en (mean log-probability"
            " -1.50); for other languages use a multilingual model: --model base",
        ),
    ],
)
def test_the_cli_warns_in_one_line_naming_the_file_and_keeps_exit_0(
    tmp_path: Path, decoder: FakeDecoder, audio: Waveform, expected: str
) -> None:
    (tmp_path / "a.wav").touch()
    container = Container()
    with container.override_providers(
        audio=InMemoryAudioSource({"a.wav": audio}), decoder=decoder, aligner=FakeAligner()
    ):
        result = CliRunner().invoke(
            app,
            ["transcribe", str(tmp_path / "a.wav"), "-o", str(tmp_path / "out")],
            obj=container,
            env={"COLUMNS": "400"},
        )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"warning: {tmp_path / 'a.wav'}: {expected}"), warnings[0]
