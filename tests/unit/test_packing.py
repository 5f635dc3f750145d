"""Short requests packed into one window: the split never hands a word to another request, with any model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.domain.audio import SAMPLE_RATE, WINDOW_SECONDS, Window
from onepass_whisper.domain.model import Segment, TranscribeOptions, Transcript, Word
from onepass_whisper.domain.packing import PACK_GAP_SECONDS, fits, pack, packable, split, unfinished
from tests.fakes import FakeAligner, FakeDecoder, RegionDecoder, tone

WAIT = 10.0


def request(source: int, seconds: float, label: int | None = None) -> Window:
    amplitude = (label if label is not None else 100 + source) / 1000
    return Window(source=source, index=0, offset=0.0, samples=tone(seconds, amplitude).samples)


@st.composite
def packs(draw: st.DrawFn) -> list[Window]:
    durations: list[float] = []
    for _ in range(draw(st.integers(2, 6))):
        duration = draw(st.floats(0.1, 12.0))
        if fits(durations, duration):
            durations.append(duration)
    return [request(i, d) for i, d in enumerate(durations)]


@st.composite
def segments_anywhere(draw: st.DrawFn, length: float) -> list[Segment]:
    """Segments a model might write, wrong ones included: any times in the window, words anywhere in them."""
    out = []
    for n in range(draw(st.integers(0, 8))):
        a, b = sorted(draw(st.floats(0.0, length)) for _ in range(2))
        edges = sorted(draw(st.lists(st.floats(a, b), min_size=0, max_size=6)))
        words = tuple(Word(f" w{n}.{k}", s, e, 0.9) for k, (s, e) in enumerate(zip(edges[::2], edges[1::2])))
        out.append(Segment(a, b, "".join(w.text for w in words), words))
    return out


@given(st.data(), packs())
def test_a_word_handed_to_a_part_was_timed_inside_that_parts_claim(data: st.DataObject, parts: list[Window]) -> None:
    packed = pack(parts, source=-1)
    segments = data.draw(segments_anywhere(packed.window.duration))
    where = {w.text: (w.start, w.end) for s in segments for w in s.words}
    owned = split(packed, segments)
    if owned is None:
        return
    assert sum(len(o) for o in owned) == len(segments)  # nothing dropped, nothing doubled
    for index, (part, mine) in enumerate(zip(packed.parts, owned)):
        low, high = packed.claim(index)
        for segment in mine:
            assert 0.0 <= segment.start <= segment.end <= part.window.duration
            for word in segment.words:
                start, end = where[word.text]
                assert low <= start <= end <= high  # in the pack: its own audio or the silence beside it
                assert 0.0 <= word.start <= word.end <= part.window.duration


@given(packs())
def test_claims_tile_the_pack_and_each_holds_only_its_parts_sound(parts: list[Window]) -> None:
    packed = pack(parts, source=-1)
    claims = [packed.claim(i) for i in range(len(parts))]
    assert claims[0][0] == 0.0 and claims[-1][1] == pytest.approx(packed.window.duration)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(claims, claims[1:]))
    samples = packed.window.samples
    for index, (part, (low, high)) in enumerate(zip(packed.parts, claims)):
        first = round(part.start * SAMPLE_RATE)
        assert np.array_equal(samples[first : first + len(part.window.samples)], part.window.samples)
        outside = np.concatenate(
            [
                samples[round(low * SAMPLE_RATE) : first],
                samples[first + len(part.window.samples) : round(high * SAMPLE_RATE)],
            ]
        )
        assert not np.any(outside), index  # the rest of a claim is the gap's digital silence
    assert packed.window.duration <= WINDOW_SECONDS


def test_a_segment_across_a_gap_makes_the_pack_unsplittable() -> None:
    packed = pack([request(0, 3.0), request(1, 3.0)], source=-1)
    across = Segment(2.0, 3.0 + PACK_GAP_SECONDS + 1.0, " a b", (Word(" a", 2.0, 2.5, 0.9), Word(" b", 5.5, 6.0, 0.9)))
    assert split(packed, [across]) is None
    inside = Segment(3.0 + PACK_GAP_SECONDS + 0.5, 6.0, " b", (Word(" b", 5.5, 6.0, 0.9),))
    owned = split(packed, [inside])
    assert owned is not None and owned[0] == [] and [w.text for w in owned[1][0].words] == [" b"]
    assert owned[1][0].words[0].start == pytest.approx(0.5)  # in the second request's own time


def test_parts_the_model_did_not_finish_are_named() -> None:
    packed = pack([request(0, 3.0), request(1, 3.0), request(2, 3.0)], source=-1)
    first = Segment(0.0, 3.0, " a", (Word(" a", 0.0, 3.0, 0.9),))
    owned = split(packed, [first])
    assert owned is not None and unfinished(packed, owned) == [1, 2]


def test_only_a_requests_whole_short_audio_with_sound_is_packable() -> None:
    assert packable(request(0, 5.0), 10.0)
    assert not packable(request(0, 12.0), 10.0)
    assert not packable(Window(0, 1, 30.0, tone(5.0).samples), 10.0)  # a later window of a long request
    assert not packable(Window(0, 0, 0.0, np.zeros(SAMPLE_RATE, np.float32)), 10.0)  # silence decodes alone


# -- in the scheduler ---------------------------------------------------------------------------------------------


@pytest.fixture
def regions() -> RegionDecoder:
    return RegionDecoder()


def scheduler(decoder: object, pack_seconds: float = 10.0, batch_size: int = 4) -> BatchScheduler:
    return BatchScheduler(
        lambda: decoder,  # type: ignore[arg-type,return-value]
        FakeAligner(),
        batch_size=batch_size,
        gather_seconds=0.2,
        align_workers=2,
        pack_seconds=pack_seconds,
    )


def labels(transcript: Transcript) -> set[str]:
    return {w.text.strip() for w in transcript.words}


def answers(running: BatchScheduler, seconds: list[float]) -> Iterator[tuple[int, float, Transcript]]:
    tickets = [running.submit(tone(s, (100 + i) / 1000), TranscribeOptions()) for i, s in enumerate(seconds)]
    for i, ticket in enumerate(tickets):
        yield 100 + i, seconds[i], ticket.future.result(WAIT)


def test_short_requests_share_a_window_and_each_gets_only_its_own_words(regions: RegionDecoder) -> None:
    seconds = [3.0, 2.0, 4.5, 1.5, 5.0, 2.5]
    with scheduler(regions) as running:
        for label, duration, transcript in answers(running, seconds):
            assert labels(transcript) == {f"w{label}"}
            assert all(0.0 <= w.start <= w.end <= duration for w in transcript.words)
            assert transcript.duration == pytest.approx(duration)
    windows = [window for batch in regions.batches for window in batch]
    assert len(windows) < len(seconds)  # packed: fewer windows decoded than requests
    assert any(source < 0 for source, _, _ in windows)


def test_a_pack_the_model_blurs_across_a_gap_is_decoded_again_part_by_part() -> None:
    blurred = RegionDecoder(spill=PACK_GAP_SECONDS)  # every segment reaches into its neighbour's claim
    with scheduler(blurred) as running:
        for label, _duration, transcript in answers(running, [3.0, 2.0, 4.0]):
            assert labels(transcript) == {f"w{label}"}
    assert [source for source, _, _ in blurred.batches[0]] == [-1]  # first all three in one pack
    alone = [source for batch in blurred.batches[1:] for source, _, _ in batch]
    assert sorted(alone) == [0, 1, 2]  # after the pack, each request alone


def test_parts_after_an_early_stop_are_decoded_alone() -> None:
    stopping = RegionDecoder(stop_after=1)
    with scheduler(stopping) as running:
        for label, _duration, transcript in answers(running, [3.0, 2.0, 4.0]):
            assert labels(transcript) == {f"w{label}"}
    assert [source for source, _, _ in stopping.batches[0]] == [-1]
    assert sorted(source for batch in stopping.batches[1:] for source, _, _ in batch) == [1, 2]


def test_no_packing_where_the_language_is_detected_per_window() -> None:
    decoder = FakeDecoder(multilingual=True)
    with scheduler(decoder) as running:
        list(answers(running, [3.0, 2.0]))
    assert decoder.batches == [2]  # two windows: a pack would have one language for both requests


def test_packing_off_by_default(regions: RegionDecoder) -> None:
    with scheduler(regions, pack_seconds=0.0) as running:
        list(answers(running, [3.0, 2.0, 4.0]))
    assert all(source >= 0 for batch in regions.batches for source, _, _ in batch)
