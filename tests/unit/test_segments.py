"""No segment of zero or negative length reaches a transcript or any file written from it (``domain/segments.py``)."""

from __future__ import annotations

import json
import re

import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.adapters.writers import SubtitleLayout, render
from onepass_whisper.application.word_timing import timed_segments
from onepass_whisper.domain.audio import SAMPLE_RATE, DecodedChunk
from onepass_whisper.domain.model import Segment, Transcript, Word
from onepass_whisper.domain.segments import MIN_SEGMENT_SECONDS, spanning
from tests.strategies import decoded_chunks

CUE = re.compile(r"(\d\d):(\d\d)[:.,](\d\d)[.,](\d\d\d) --> (\d\d):(\d\d)[:.,](\d\d)[.,](\d\d\d)")


def seconds(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def cue_lengths(text: str) -> list[int]:
    """Milliseconds of each srt or vtt cue (the hours are always written by whisper's writers)."""
    lengths = []
    for match in CUE.finditer(text):
        parts = match.groups()
        lengths.append(seconds(*parts[4:]) - seconds(*parts[:4]))
    return lengths


def assert_nothing_empty(transcript: Transcript) -> None:
    """Every segment, and every cue or row of every format, spans at least a millisecond."""
    for segment in transcript.segments:
        assert segment.end - segment.start >= MIN_SEGMENT_SECONDS - 1e-9, segment
    document = json.loads(render(transcript, "json"))
    assert all(s["end"] > s["start"] for s in document["segments"])
    for fmt in ("srt", "vtt"):
        assert all(length > 0 for length in cue_lengths(render(transcript, fmt))), fmt
    for row in render(transcript, "tsv").splitlines()[1:]:
        start, end, _ = row.split("\t", 2)
        assert int(end) > int(start)


def with_instants(chunk: DecodedChunk, where: list[float]) -> DecodedChunk:
    """``chunk`` with its segments moved to single instants (as clamped timestamps leave them)."""
    moved = [evolve(s, start=t, end=t) for s, t in zip(chunk.segments, where)]
    return evolve(chunk, segments=moved + list(chunk.segments[len(moved) :]))


@settings(max_examples=60, deadline=None)
@given(
    chunk=decoded_chunks(max_frames=30),
    instants=st.lists(st.floats(0.0, 1.0), max_size=3),
    # on the sample grid, as every window's offset is (``Window.end`` is too): an offset between two samples would
    # give a window whose span on the grid is shorter than its duration
    offset=st.integers(0, 100 * SAMPLE_RATE).map(lambda n: n / SAMPLE_RATE),
    words=st.booleans(),
)
def test_no_segment_of_a_window_is_empty_in_any_format(
    chunk: DecodedChunk, instants: list[float], offset: float, words: bool
) -> None:
    """Arbitrary attention, segments drawn anywhere in the window, some at one instant (the window's end included):
    the timed segments, and the cues of every format, all span time."""
    duration = chunk.window.duration
    chunk = with_instants(chunk, [min(f * 2 * duration, duration) for f in instants])
    chunk = evolve(chunk, window=evolve(chunk.window, offset=offset))
    segments = timed_segments(DtwAligner(), chunk, words)
    assert "".join(s.text for s in segments) == "".join(s.text for s in chunk.segments)  # no text lost
    assert all(offset <= s.start <= s.end <= chunk.window.end for s in segments)
    transcript = Transcript(segments, "en", offset + duration)
    # less than a word: its segment is all of the window, however short; and a window without room for the minimum
    # length of each of its segments and words (tens of ms of audio holding several words) cannot keep every word's
    # cue apart: real speech gives a word 100 ms or more
    words_in_window = sum(len(s.words) for s in chunk.segments)
    if duration < MIN_SEGMENT_SECONDS * max(1, len(chunk.segments), words_in_window):
        return
    assert_nothing_empty(transcript)
    if words:
        for layout in (SubtitleLayout(max_line_width=12, max_line_count=2), SubtitleLayout(max_words_per_line=2)):
            for fmt in ("srt", "vtt"):
                assert all(n >= 0 for n in cue_lengths(render(transcript, fmt, layout)))


def word(text: str, at: float, end: float | None = None) -> Word:
    return Word(text, at, at if end is None else end, 0.5)


def test_segments_at_the_window_s_end_join_the_one_before_their_words_spread() -> None:
    """A sampled attempt's timestamps past the audio: its last segments all at the window's end (8.25 s)."""
    spoken = Segment(6.0, 7.9, " Il fait beau.", (word(" Il", 6.0, 7.0), word(" beau.", 7.0, 7.9)))
    stuck = [Segment(8.25, 8.25, t, (word(t, 8.25),)) for t in (" les", " bleus", " et")]
    [joined] = spanning([spoken, *stuck], 0.0, 8.25)
    assert joined.text == " Il fait beau. les bleus et" and (joined.start, joined.end) == (6.0, 8.25)
    ends = [w.end for w in joined.words]
    assert ends == pytest.approx([7.0, 7.9, 8.0167, 8.1333, 8.25], abs=1e-3)  # 7.9 -> 8.25 shared by the three
    assert all(w.end > w.start for w in joined.words)


def test_a_first_short_segment_joins_the_next_and_a_lone_one_is_widened() -> None:
    first = Segment(3.4, 3.4, " a", (word(" a", 3.4),))
    second = Segment(4.1, 4.3, " b", (word(" b", 4.1, 4.3),))
    [joined] = spanning([first, second], 0.0, 8.0)
    assert (joined.start, joined.end, joined.text) == (3.4, 4.3, " a b")
    assert joined.words[0].end == pytest.approx(4.1)  # the room up to the next word
    [alone] = spanning([Segment(8.0, 8.0, " x", (word(" x", 8.0),))], 0.0, 8.0)
    assert (alone.start, alone.end) == pytest.approx((8.0 - MIN_SEGMENT_SECONDS, 8.0))
    assert (alone.words[0].start, alone.words[0].end) == pytest.approx((alone.start, alone.end))


def test_segments_that_span_time_are_left_as_they_are() -> None:
    segments = [Segment(0.0, 1.0, " a", (word(" a", 0.2), word(" b", 0.2, 1.0))), Segment(1.0, 1.02, " c")]
    assert spanning(segments, 0.0, 2.0) == segments  # a zero-length word inside a real segment is the aligner's


def test_a_segment_stacked_where_the_next_segments_words_start_shares_their_time() -> None:
    """Found by the property above: clamped timestamps leave a segment's words at 0.0, and the next segment's first
    word there too; without room before that word, they would print as a word cue from 0.0 to 0.0."""
    stacked = Segment(0.0, 0.25, " hello hello", (word(" hello", 0.0), word(" hello", 0.0)))
    after = Segment(0.0, 0.24, " hello hello", (word(" hello", 0.0), word(" hello", 0.0, 0.24)))
    first, second = spanning([stacked, after], 0.0, 0.26)
    edges = [t for s in (first, second) for w in s.words for t in (w.start, w.end)]
    assert edges == pytest.approx([0.0, 0.06, 0.06, 0.12, 0.12, 0.18, 0.18, 0.24])
    transcript = Transcript([first, second], "en", 0.26)
    assert_nothing_empty(transcript)
