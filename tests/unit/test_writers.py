"""The transcript writers: the JSON dict built from the domain, and the atomic write."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, TextIO

import attrs
import numpy as np
import pytest

from onepass_whisper.adapters.writers import FORMATS, SubtitleLayout, TranscriptFiles, result_dict, write_atomically
from onepass_whisper.domain.audio import Truncation
from onepass_whisper.domain.errors import OutputWriteError
from onepass_whisper.domain.model import Doubt, Segment, Transcript, Word

TRANSCRIPT = Transcript(
    segments=[
        Segment(
            0.5,
            1.5,
            " Hello world.",
            words=[Word(" Hello", 0.5, 1.0, float(np.float32(0.9))), Word(" world.", 1.0, 1.5, 0.8)],
            avg_logprob=float(np.float32(-0.25)),
            compression_ratio=1.1,
            no_speech_prob=0.01,
            temperature=0.0,
            language="en",
            language_probability=0.43219,
        ),
        Segment(2.0, 3.25, " Bye.", words=[Word(" Bye.", 2.0, 3.25, 0.7)]),
    ],
    language="en",
    duration=4.0,
    model="tiny.en",
    language_probability=0.43219,
    doubts=[Doubt("uncertain_language", "en", 0.43219)],
)


def test_result_dict_follows_the_schema() -> None:
    document = result_dict(TRANSCRIPT)
    assert document == {
        "text": "Hello world. Bye.",
        "language": "en",
        "language_probability": 0.4322,
        "doubts": [{"kind": "uncertain_language", "score": 0.4322}],
        "segments": [
            {
                "id": 0,
                "start": 0.5,
                "end": 1.5,
                "text": " Hello world.",
                "words": [
                    {"word": " Hello", "start": 0.5, "end": 1.0, "probability": 0.9},
                    {"word": " world.", "start": 1.0, "end": 1.5, "probability": 0.8},
                ],
                "avg_logprob": -0.25,
                "compression_ratio": 1.1,
                "no_speech_prob": 0.01,
                "temperature": 0.0,
                "language": "en",
                "language_probability": 0.4322,
            },
            {
                "id": 1,
                "start": 2.0,
                "end": 3.25,
                "text": " Bye.",
                "words": [{"word": " Bye.", "start": 2.0, "end": 3.25, "probability": 0.7}],
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
                "temperature": 0.0,
                "language": "",
                "language_probability": None,
            },
        ],
        "model": "tiny.en",
        "duration": 4.0,
        "truncated": None,
    }
    json.dumps(document)  # plain Python numbers only


@pytest.mark.parametrize(("expected", "shown"), [(3.8, 3.8), (None, None)])
def test_result_dict_marks_an_input_cut_short(expected: float | None, shown: float | None) -> None:
    transcript = attrs.evolve(TRANSCRIPT, duration=1.3, truncated=Truncation(1.3, expected, "lost sync"))
    assert result_dict(transcript)["truncated"] == {"expected_duration": shown, "duration": 1.3}


def test_result_dict_without_words() -> None:
    assert all("words" not in s for s in result_dict(TRANSCRIPT, words=False)["segments"])


def test_times_are_rounded_to_the_millisecond() -> None:
    transcript = Transcript([Segment(0.12345, 0.98765, " x")], language="en", duration=1.00049)
    document = result_dict(transcript)
    assert (document["segments"][0]["start"], document["segments"][0]["end"], document["duration"]) == (
        0.123,
        0.988,
        1.0,
    )


def test_all_formats_are_written_beside_each_other(tmp_path: Path) -> None:
    written = TranscriptFiles().write(TRANSCRIPT, tmp_path / "deep" / "talk")
    assert [p.name for p in written] == [f"talk.{fmt}" for fmt in FORMATS]
    assert (tmp_path / "deep" / "talk.txt").read_text() == "Hello world.\nBye.\n"
    tsv = (tmp_path / "deep" / "talk.tsv").read_text()
    assert tsv == "start\tend\ttext\n500\t1500\tHello world.\n2000\t3250\tBye.\n"
    assert json.loads((tmp_path / "deep" / "talk.json").read_text()) == result_dict(TRANSCRIPT)


def test_a_stem_with_dots_keeps_them(tmp_path: Path) -> None:
    files = TranscriptFiles(formats=("txt",))
    assert files.targets(tmp_path / "talk.v2") == [tmp_path / "talk.v2.txt"]
    files.write(TRANSCRIPT, tmp_path / "talk.v2")
    assert (tmp_path / "talk.v2.txt").exists()


def test_subtitle_layout_is_passed_to_the_writers(tmp_path: Path) -> None:
    TranscriptFiles(formats=("srt",), layout=SubtitleLayout(max_words_per_line=1)).write(TRANSCRIPT, tmp_path / "t")
    assert (tmp_path / "t.srt").read_text().count("-->") == 3


def test_an_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old complete transcript\n")

    def half_then_fail(file: TextIO) -> None:
        file.write("new but trunc")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "old complete transcript\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_an_os_error_becomes_an_output_write_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").mkdir()
    with pytest.raises(OutputWriteError, match="a.txt"):
        write_atomically(tmp_path / "a.txt", lambda file: file.write("x"))
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomically(tmp_path / "a.txt", lambda file: file.write("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_just_after_the_temporary_is_made_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: type[BaseException]
) -> None:
    """A signal handled right after ``os.open`` returns, before its descriptor is stored anywhere."""
    real_open = os.open

    def open_then_interrupted(*args: Any, **kwargs: Any) -> int:
        real_open(*args, **kwargs)
        raise interrupt

    monkeypatch.setattr(os, "open", open_then_interrupted)
    with pytest.raises(interrupt):
        write_atomically(tmp_path / "a.txt", lambda file: file.write("x"))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_another_writers_temporary_is_never_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the drawn temporary name exists already, another name is drawn and the existing file stays."""
    theirs = tmp_path / ".a.txt.0000000000000000.part"
    theirs.write_text("someone else's")
    names = iter(["0000000000000000", "1111111111111111"])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(names))
    write_atomically(tmp_path / "a.txt", lambda file: file.write("mine\n"))
    assert theirs.read_text() == "someone else's"
    assert (tmp_path / "a.txt").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name, "a.txt"]
