"""Readers for the five output formats, strict enough to catch a malformed file, and the JSON schema check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3})$")
VTT_TIME = re.compile(r"^(?:(\d{2}):)?(\d{2}):(\d{2})\.(\d{3})$")

Cue = tuple[float, float, str]


def _seconds(match: re.Match[str] | None, text: str) -> float:
    assert match is not None, f"bad timestamp {text!r}"
    hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    assert minutes < 60 and seconds < 60, text
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def _times(line: str, pattern: re.Pattern[str]) -> tuple[float, float]:
    start, arrow, end = line.partition(" --> ")
    assert arrow, f"no ' --> ' in {line!r}"
    return _seconds(pattern.match(start), start), _seconds(pattern.match(end), end)


def read_srt(path: Path) -> list[Cue]:
    """Cues of an SRT file: numbered from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text, blank line."""
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    cues = []
    for number, block in enumerate(blocks, start=1):
        lines = block.strip("\n").split("\n")
        assert lines[0] == str(number), f"cue {number} is numbered {lines[0]!r}"
        start, end = _times(lines[1], SRT_TIME)
        cues.append((start, end, "\n".join(lines[2:])))
    return cues


def read_vtt(path: Path) -> list[Cue]:
    """Cues of a WebVTT file: the ``WEBVTT`` header, then ``[HH:]MM:SS.mmm --> ...``, text, blank line."""
    header, _, body = path.read_text(encoding="utf-8").partition("\n\n")
    assert header == "WEBVTT", header
    cues = []
    for block in (b for b in body.split("\n\n") if b.strip()):
        lines = block.strip("\n").split("\n")
        start, end = _times(lines[0], VTT_TIME)
        cues.append((start, end, "\n".join(lines[1:])))
    return cues


def read_tsv(path: Path) -> list[tuple[int, int, str]]:
    """Rows of the TSV file: ``start<TAB>end<TAB>text`` with times in integer milliseconds."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "start\tend\ttext", lines[0]
    rows = []
    for line in lines[1:]:
        start, end, text = line.split("\t")
        rows.append((int(start), int(end), text))
    return rows


def assert_monotonic(cues: list[Cue]) -> None:
    """Every cue ends after it starts, and starts no earlier than the previous one."""
    for start, end, _ in cues:
        assert 0 <= start <= end, (start, end)
    starts = [start for start, _, _ in cues]
    assert starts == sorted(starts), starts


SEGMENT_KEYS = {
    "id", "start", "end", "text", "avg_logprob", "compression_ratio", "no_speech_prob", "temperature", "language",
    "language_probability",
}  # fmt: skip
WORD_KEYS = {"word", "start", "end", "probability"}


def check_json_schema(document: Any, *, words: bool = True) -> None:
    """The documented schema (docs/cli.md): exact keys, types, ids in order, times ordered within the file."""
    assert isinstance(document, dict)
    # "options" (the settings that made it) is written by ``app transcribe``, not by the corpus workers
    keys = {"text", "language", "language_probability", "doubts", "segments", "model", "duration", "truncated"}
    assert set(document) - {"options"} == keys, set(document)
    probability = document["language_probability"]
    assert probability is None or 0.0 <= probability <= 1.0, probability
    assert all(set(doubt) == {"kind", "score"} for doubt in document["doubts"]), document["doubts"]
    assert isinstance(document.get("options", {}), dict)
    truncated = document["truncated"]
    assert truncated is None or (
        set(truncated) == {"expected_duration", "duration"} and truncated["duration"] == document["duration"]
    ), truncated
    assert isinstance(document["text"], str) and isinstance(document["language"], str)
    assert isinstance(document["model"], str)
    duration = document["duration"]
    assert isinstance(duration, float | int) and duration >= 0
    assert isinstance(document["segments"], list)
    for number, segment in enumerate(document["segments"]):
        assert set(segment) == SEGMENT_KEYS | ({"words"} if words else set()), set(segment)
        assert segment["id"] == number
        assert isinstance(segment["text"], str)
        assert 0 <= segment["start"] < segment["end"] <= duration + 1e-3  # never of zero length (issue 26)
        assert isinstance(segment["language"], str)
        assert segment["language_probability"] is None or 0.0 <= segment["language_probability"] <= 1.0
        for key in ("avg_logprob", "compression_ratio", "no_speech_prob", "temperature"):
            assert isinstance(segment[key], float | int), key
        for word in segment.get("words", []):
            assert set(word) == WORD_KEYS, set(word)
            assert isinstance(word["word"], str)
            assert segment["start"] - 1e-3 <= word["start"] <= word["end"] <= segment["end"] + 1e-3
            assert 0.0 <= word["probability"] <= 1.0


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
