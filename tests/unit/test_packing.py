"""Short requests packed into one window: the split never hands a word to another request, with any model."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.domain.audio import FRAME_SECONDS, SAMPLE_RATE, WINDOW_SECONDS, ChunkSegment, DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from onepass_whisper.domain.packing import PACK_GAP_SECONDS, fits, pack, packable, split_chunk, unfinished
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


def decoded(window: Window, spans: list[tuple[float, float, int]], seed: int = 0) -> DecodedChunk:
    """A decoded chunk of ``window`` with a segment of ``words`` one-token words per (start, end, words), random
    attention and probabilities."""
    rng = np.random.default_rng(seed)
    segments = tuple(
        ChunkSegment(a, b, "".join(f" s{n}w{k}" for k in range(w)), tuple(f" s{n}w{k}" for k in range(w)), (1,) * w)
        for n, (a, b, w) in enumerate(spans)
    )
    tokens = sum(w for _, _, w in spans)
    return DecodedChunk(
        window=window,
        language="en",
        segments=segments,
        token_probabilities=rng.uniform(0.1, 1.0, tokens).astype(np.float32),
        attention=rng.normal(size=(2, tokens + 1, window.num_frames)).astype(np.float32),
    )


@st.composite
def spans_anywhere(draw: st.DrawFn, length: float) -> list[tuple[float, float, int]]:
    """Segments a model might write, wrong ones included: any times in the window, in any order."""
    spans = []
    for _ in range(draw(st.integers(0, 8))):
        a, b = sorted(draw(st.floats(0.0, length)) for _ in range(2))
        spans.append((a, b, draw(st.integers(1, 3))))
    return spans


@given(st.data(), packs())
def test_a_part_gets_only_segments_of_its_claim_and_only_its_own_audios_attention(
    data: st.DataObject, parts: list[Window]
) -> None:
    packed = pack(parts, source=-1)
    spans = data.draw(spans_anywhere(packed.window.duration))
    chunk = attrs.evolve(  # as the device's aligner leaves it: a DTW over the whole pack, which no part may keep
        decoded(packed.window, spans, seed=len(spans)), token_frames=np.zeros(sum(w for *_, w in spans) + 1, np.int32)
    )
    chunks = split_chunk(packed, chunk)
    if chunks is None:
        return
    handed = [(i, segment) for i, c in enumerate(chunks) for segment in c.segments]
    assert len(handed) == len(spans)  # nothing dropped, nothing doubled, in order
    for (index, segment), original in zip(handed, chunk.segments):
        low, high = packed.claim(index)
        assert low <= (original.start + original.end) / 2 <= high and segment.words == original.words
        for other, part in enumerate(packed.parts):  # its timestamps touch no other request's audio
            assert other == index or original.end <= part.start or part.end <= original.start
    rows = 0
    for index, (part, mine) in enumerate(zip(packed.parts, chunks)):
        low, high = packed.claim(index)
        frames, tokens = mine.attention.shape[-1], mine.token_count
        first = min(round(part.start / FRAME_SECONDS), chunk.attention.shape[-1] - frames)  # the last part: flush
        assert frames == part.window.num_frames
        assert np.array_equal(
            mine.attention[:, :tokens], chunk.attention[:, rows : rows + tokens, first : first + frames]
        )
        # the columns a word can be placed on are the part's own audio (to a frame), inside its claim
        assert low - FRAME_SECONDS <= first * FRAME_SECONDS and (first + frames) * FRAME_SECONDS <= high + FRAME_SECONDS
        rows += tokens
        assert mine.token_frames is None
        for words in DtwAligner().align(mine):  # the real aligner times them inside the part's own audio
            assert all(0.0 <= w.start <= w.end <= part.window.duration for w in words)


@given(packs())
def test_claims_tile_the_pack_and_each_holds_only_its_parts_sound(parts: list[Window]) -> None:
    packed = pack(parts, source=-1)
    claims = [packed.claim(i) for i in range(len(parts))]
    assert claims[0][0] == 0.0 and claims[-1][1] == pytest.approx(packed.window.duration)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(claims, claims[1:]))
    samples = packed.window.samples
    for index, (part, (low, high)) in enumerate(zip(packed.parts, claims)):
        first, last = round(part.start * SAMPLE_RATE), round(part.start * SAMPLE_RATE) + len(part.window.samples)
        assert np.array_equal(samples[first:last], part.window.samples)
        outside = np.concatenate([samples[round(low * SAMPLE_RATE) : first], samples[last : round(high * SAMPLE_RATE)]])
        assert not np.any(outside), index  # the rest of a claim is the gap's digital silence
    assert packed.window.duration <= WINDOW_SECONDS


def test_a_segment_into_another_requests_audio_makes_the_pack_unsplittable() -> None:
    packed = pack([request(0, 3.0), request(1, 3.0)], source=-1)
    assert split_chunk(packed, decoded(packed.window, [(2.0, 3.0 + PACK_GAP_SECONDS + 1.0, 2)])) is None
    # early into the gap's silence (whisper's timestamps often are): the second request's, in its own time
    inside = split_chunk(packed, decoded(packed.window, [(3.5, 8.0, 1)]))
    assert inside is not None and inside[0].segments == () and inside[1].segments[0].start == 0.0


def test_segments_back_in_time_make_the_pack_unsplittable() -> None:
    packed = pack([request(0, 3.0), request(1, 3.0)], source=-1)
    assert split_chunk(packed, decoded(packed.window, [(5.5, 7.0, 1), (0.5, 2.0, 1)])) is None


def test_parts_the_model_did_not_finish_are_named() -> None:
    packed = pack([request(0, 3.0), request(1, 3.0), request(2, 3.0)], source=-1)
    chunks = split_chunk(packed, decoded(packed.window, [(0.0, 3.0, 2)]))
    assert chunks is not None and unfinished(packed, chunks) == [1, 2]


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
    blurred = RegionDecoder(spill=PACK_GAP_SECONDS + 0.5)  # every segment reaches into its neighbours' audio
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
