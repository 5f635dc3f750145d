"""``DtwAligner``: contract, whisper's heuristics, robustness (hypothesis) and audio refinement on synthetic bursts."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.aligner import DtwAligner, attention_matrix, token_frames
from onepass_whisper.adapters.dtw.refine import (
    FINAL_SEARCH_SECONDS,
    find_pauses,
    frame_levels,
    refine_boundaries,
    snap_to_valleys,
    start_after_last_pause,
)
from onepass_whisper.domain.audio import SAMPLE_RATE, ChunkSegment, DecodedChunk, Window
from onepass_whisper.domain.model import Word
from onepass_whisper.domain.ports import Aligner
from tests.strategies import decoded_chunks

FRAME = 0.02  # seconds per cross-attention frame
TOLERANCE = 0.03  # seconds: refined edges must land this close to the bursts' edges


def _conforms() -> None:  # mypy-only; never called
    _a: Aligner = DtwAligner()


def block_attention(starts: Sequence[float], frames: int) -> NDArray[np.float32]:
    """1 head × rows × frames: row i attends to frames [starts[i], starts[i + 1]), the last row to the end."""
    attention = np.zeros((1, len(starts), frames), dtype=np.float32)
    edges = [round(s / FRAME) for s in starts] + [frames]
    for row, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False)):
        attention[0, row, lo:hi] = 10.0
    return attention


def chunk_of(
    words: Sequence[str],
    word_starts: Sequence[float],
    eot: float,
    samples: NDArray[np.float32],
    segment: tuple[float, float] | None = None,
) -> DecodedChunk:
    """One segment of one-token words; DTW places word i at ``word_starts[i]`` and end-of-text at ``eot``."""
    duration = len(samples) / SAMPLE_RATE
    window = Window(source=0, index=0, offset=0.0, samples=samples)
    start, end = segment or (0.0, duration)
    return DecodedChunk(
        window=window,
        language="en",
        segments=[ChunkSegment(start, end, "".join(words), tuple(words), (1,) * len(words))],
        token_probabilities=np.full(len(words), 0.9, dtype=np.float32),
        attention=block_attention([*word_starts, eot], window.num_frames),
    )


def bursts(edges: Sequence[tuple[float, float]], duration: float, seed: int = 0) -> NDArray[np.float32]:
    """Tones and noise bursts at ``edges`` (seconds) over quiet background noise (-60 dB)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration * SAMPLE_RATE)) / SAMPLE_RATE
    samples = 1e-3 * rng.normal(size=t.size)
    for k, (lo, hi) in enumerate(edges):
        inside = (t >= lo) & (t < hi)
        sound = np.sin(2 * np.pi * (220 + 110 * k) * t) if k % 2 == 0 else rng.normal(size=t.size) * 0.3
        samples[inside] += 0.3 * sound[inside]
    return samples.astype(np.float32)


def flat(words: tuple[tuple[Word, ...], ...]) -> list[Word]:
    return [w for segment in words for w in segment]


def edges_of(words: Sequence[Word]) -> list[float]:
    return [t for w in words for t in (w.start, w.end)]


def assert_ordered_in_window(words: Sequence[Word], duration: float) -> None:
    times = edges_of(words)
    assert times == sorted(times)
    assert all(0.0 <= t <= duration for t in times)


# --- contract and robustness ------------------------------------------------------------------------------------


@given(chunk=decoded_chunks(), refine=st.booleans())
def test_words_are_ordered_inside_the_window_and_keep_the_text(chunk: DecodedChunk, refine: bool) -> None:
    words = DtwAligner(refine=refine).align(chunk)
    assert len(words) == len(chunk.segments)
    for segment, segment_words in zip(chunk.segments, words, strict=True):
        assert "".join(w.text for w in segment_words) == "".join(segment.words)  # merging only moves text
    assert_ordered_in_window(flat(words), chunk.window.duration)


@given(chunk=decoded_chunks(extreme=True), refine=st.booleans())
def test_extreme_attention_never_raises(chunk: DecodedChunk, refine: bool) -> None:
    assert_ordered_in_window(flat(DtwAligner(refine=refine).align(chunk)), chunk.window.duration)


@given(chunk=decoded_chunks(), refine=st.booleans())
def test_token_frames_computed_elsewhere_give_the_same_words(chunk: DecodedChunk, refine: bool) -> None:
    """A GPU decoder's chunk carries DTW's frames instead of the attention: the words are the same."""
    aligner = DtwAligner(refine=refine, lag_seconds=0.1)
    frames = token_frames(chunk.attention, aligner.median_width).astype(np.int32)
    precomputed = attrs.evolve(chunk, attention=np.zeros((0, 0, 0), np.float32), token_frames=frames)
    assert aligner.align(precomputed) == aligner.align(chunk)


def test_token_frames_of_the_wrong_length_are_rejected() -> None:
    chunk = chunk_of([" a", " b"], [0.1, 0.3], 0.5, bursts([(0.1, 0.5)], 1.0))
    wrong = attrs.evolve(chunk, attention=np.zeros((0, 0, 0), np.float32), token_frames=np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="token_frames must have shape"):
        DtwAligner().align(wrong)


@pytest.mark.parametrize("attention_shape", [(2, 1, 50), (2, 0, 50), (0, 0, 0)])
def test_no_tokens_give_no_words(attention_shape: tuple[int, ...]) -> None:
    window = Window(source=0, index=0, offset=0.0, samples=np.zeros(SAMPLE_RATE, dtype=np.float32))
    empty = np.zeros(0, dtype=np.float32)
    chunk = DecodedChunk(window, "en", [], empty, np.zeros(attention_shape, dtype=np.float32))
    assert DtwAligner().align(chunk) == ()


def test_segments_without_words_give_empty_tuples() -> None:
    window = Window(source=0, index=0, offset=0.0, samples=np.zeros(SAMPLE_RATE, dtype=np.float32))
    segments = [ChunkSegment(0.0, 0.5, "", (), ()), ChunkSegment(0.5, 1.0, "", (), ())]
    chunk = DecodedChunk(window, "en", segments, np.zeros(0, dtype=np.float32), np.zeros((2, 1, 50), np.float32))
    assert DtwAligner().align(chunk) == ((), ())


def test_more_tokens_than_frames() -> None:
    samples = bursts([(0.1, 0.4)], 0.5)  # 25 frames
    words = [f" w{i}" for i in range(40)]
    chunk = DecodedChunk(
        window=Window(source=0, index=0, offset=0.0, samples=samples),
        language="en",
        segments=[ChunkSegment(0.0, 0.5, "".join(words), tuple(words), (1,) * 40)],
        token_probabilities=np.full(40, 0.5, dtype=np.float32),
        attention=np.random.default_rng(0).normal(size=(3, 41, 25)).astype(np.float32),
    )
    (timed,) = DtwAligner().align(chunk)
    assert len(timed) == 40
    assert_ordered_in_window(timed, 0.5)


@pytest.mark.parametrize(
    ("attention_shape", "probabilities"), [((1, 3, 10), 3), ((1, 4, 10), 2), ((0, 4, 10), 3), ((4, 10), 3)]
)
def test_mismatched_arrays_are_rejected(attention_shape: tuple[int, ...], probabilities: int) -> None:
    chunk = DecodedChunk(
        window=Window(source=0, index=0, offset=0.0, samples=np.zeros(3200, dtype=np.float32)),
        language="en",
        segments=[ChunkSegment(0.0, 0.2, " a b", (" a", " b"), (1, 2))],
        token_probabilities=np.zeros(probabilities, dtype=np.float32),
        attention=np.zeros(attention_shape, dtype=np.float32),
    )
    with pytest.raises(ValueError, match="must"):
        DtwAligner().align(chunk)


def test_even_median_width_is_rejected() -> None:
    with pytest.raises(ValueError, match="odd"):
        DtwAligner(median_width=6)


# --- DTW timing and whisper's heuristics --------------------------------------------------------------------------


def test_words_run_from_their_first_token_to_the_next_words() -> None:
    samples = bursts([(0.0, 2.0)], 2.0)
    chunk = chunk_of([" one", " two", " three"], [0.0, 0.4, 1.0], 1.6, samples)
    (words,) = DtwAligner(refine=False).align(chunk)
    assert edges_of(words) == pytest.approx([0.0, 0.4, 0.4, 1.0, 1.0, 1.6])
    assert [w.probability for w in words] == pytest.approx([0.9] * 3)


def test_word_probability_is_the_mean_of_its_tokens() -> None:
    chunk = DecodedChunk(
        window=Window(source=0, index=0, offset=0.0, samples=np.zeros(16000, dtype=np.float32)),
        language="en",
        segments=[ChunkSegment(0.0, 1.0, " ab c", (" ab", " c"), (2, 1))],
        token_probabilities=np.array([0.2, 0.6, 1.0], dtype=np.float32),
        attention=block_attention([0.0, 0.2, 0.4, 0.6], 50),
    )
    (words,) = DtwAligner(refine=False).align(chunk)
    assert [w.probability for w in words] == pytest.approx([0.4, 1.0])
    assert edges_of(words) == pytest.approx([0.0, 0.4, 0.4, 0.6])


def test_punctuation_merges_into_its_neighbours_within_a_segment() -> None:
    texts = [[" (", "Hi", ")", ","], [" said", " she", "."], [' "']]
    counts = [len(t) for t in texts]
    tokens = sum(counts)
    chunk = DecodedChunk(
        window=Window(source=0, index=0, offset=0.0, samples=np.zeros(32000, dtype=np.float32)),
        language="en",
        segments=[ChunkSegment(0.0, 2.0, "".join(t), tuple(t), (1,) * len(t)) for t in texts],
        token_probabilities=np.full(tokens, 0.5, dtype=np.float32),
        attention=block_attention([0.1 * i for i in range(tokens + 1)], 100),
    )
    words = DtwAligner(refine=False).align(chunk)
    assert [[w.text for w in ws] for ws in words] == [[" (Hi),"], [" said", " she."], [' "']]
    hi = words[0][0]
    assert (hi.start, hi.end) == pytest.approx((0.1, 0.2))  # the receiving word keeps its own times


def test_a_long_word_after_a_sentence_end_is_shortened() -> None:
    texts = [" a", " b", ".", " c", " d"]  # " c" spans 2 s: DTW gave it the pause after "."
    samples = bursts([(0.0, 4.0)], 4.0)
    chunk = chunk_of(texts, [0.0, 0.4, 0.8, 1.0, 3.0], 3.4, samples)
    (words,) = DtwAligner(refine=False).align(chunk)
    c = words[2]
    assert c.text == " c"
    assert [c.start, c.end] == pytest.approx([3.0 - 0.8, 3.0])  # at most twice the median duration, 0.4 s


def test_the_segment_timestamps_win_over_a_long_first_word() -> None:
    samples = bursts([(0.0, 3.0)], 3.0)
    chunk = chunk_of([" hey", " you"], [0.0, 2.0], 2.4, samples, segment=(1.2, 2.4))
    (words,) = DtwAligner(refine=False).align(chunk)
    assert words[0].start == pytest.approx(1.2)


# --- refinement on synthetic audio --------------------------------------------------------------------------------

BURSTS = [(0.30, 0.80), (1.10, 1.50), (1.90, 2.60), (2.80, 3.20)]
TEXTS = [" one", " two", " three", " four"]


@pytest.mark.parametrize(
    ("case", "word_starts", "eot"),
    [
        ("pauses go to the next word", [0.0, 0.80, 1.50, 2.60], 3.20),
        ("DTW 80 ms late", [0.0, 1.18, 1.98, 2.88], 3.28),
        ("DTW 60 ms early", [0.0, 0.74, 1.44, 2.54], 3.14),
        ("pauses go to the previous word", [0.30, 1.10, 1.90, 2.80], 3.60),
    ],
)
def test_refinement_moves_edges_onto_the_bursts(case: str, word_starts: list[float], eot: float) -> None:
    chunk = chunk_of(TEXTS, word_starts, eot, bursts(BURSTS, 3.7))
    (dtw,) = DtwAligner(refine=False).align(chunk)
    (refined,) = DtwAligner(refine=True).align(chunk)
    assert all(a.end == b.start for a, b in zip(dtw, dtw[1:], strict=False))  # DTW leaves no gaps
    assert np.abs(np.subtract(edges_of(refined), np.ravel(BURSTS))).max() <= TOLERANCE, case
    assert [w.text for w in refined] == TEXTS


def test_refinement_leaves_pause_free_audio_alone() -> None:
    for samples in (bursts([(0.0, 3.7)], 3.7), bursts([], 3.7)):  # one long tone; background noise only
        chunk = chunk_of(TEXTS, [0.0, 0.80, 1.50, 2.60], 3.20, samples)
        assert DtwAligner(refine=True).align(chunk) == DtwAligner(refine=False).align(chunk)


def test_pauses_are_found_at_the_gaps_between_bursts() -> None:
    pauses = find_pauses(bursts(BURSTS, 3.7))
    expected = [(0.0, 0.30), (0.80, 1.10), (1.50, 1.90), (2.60, 2.80), (3.20, 3.70)]
    assert pauses.shape == (5, 2)
    assert np.abs(pauses - np.array(expected)).max() <= 0.01


def test_a_short_silence_is_not_a_pause() -> None:
    pauses = find_pauses(bursts([(0.2, 1.0), (1.06, 2.0)], 2.5))  # a 60-ms gap, like a stop closure
    assert [tuple(p) for p in pauses.round(2).tolist()] == [(0.0, 0.2), (2.0, 2.5)]


@st.composite
def boundaries_and_pauses(draw: st.DrawFn) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    times = np.sort(np.array(draw(st.lists(st.floats(0.0, 5.0), max_size=16)), dtype=np.float64))
    times = times[: len(times) // 2 * 2]
    edges = np.unique(np.array(draw(st.lists(st.floats(0.0, 5.0), max_size=10)), dtype=np.float64))
    edges = edges[: len(edges) // 2 * 2]
    return times[0::2], times[1::2], edges.reshape(-1, 2)


Words = tuple[NDArray[np.float64], NDArray[np.float64]]


def assert_still_ordered(before: Words, after: Words, min_length: float = 0.0) -> None:
    """Words stay in order, and a word that moved keeps more than ``min_length`` seconds."""
    (starts, ends), (new_starts, new_ends) = before, after
    assert np.all(np.diff(np.column_stack((new_starts, new_ends)).ravel()) >= 0.0)
    moved = (new_starts != starts) | (new_ends != ends)
    assert np.all(new_ends[moved] - new_starts[moved] > min_length)


@given(case=boundaries_and_pauses(), final_search=st.floats(0.0, 1.0))
def test_refined_boundaries_stay_ordered(
    case: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]], final_search: float
) -> None:
    starts, ends, pauses = case
    assert_still_ordered((starts, ends), refine_boundaries(starts, ends, pauses, final_search=final_search))


def test_lag_is_taken_off_every_time_but_the_pinned_first_start() -> None:
    chunk = chunk_of(TEXTS, [0.0, 0.80, 1.50, 2.60], 3.20, bursts([], 3.7))  # no contrast: no audio refinement
    (plain,) = DtwAligner(refine=True).align(chunk)
    (late,) = DtwAligner(refine=True, lag_seconds=0.1).align(chunk)
    (early,) = DtwAligner(refine=True, lag_seconds=-0.1).align(chunk)
    (off,) = DtwAligner(refine=False, lag_seconds=0.1).align(chunk)
    assert late[0].start == early[0].start == plain[0].start == 0.0
    assert np.allclose(np.subtract(edges_of(late)[1:], edges_of(plain)[1:]), -0.1)
    assert np.allclose(np.subtract(edges_of(early)[1:], edges_of(plain)[1:]), 0.1)
    assert off == plain  # refinement off: whisper's DTW times, no correction


@pytest.mark.parametrize("speech_ended", [True, False])
def test_the_last_word_reaches_the_pause_after_it_only_when_speech_ended(speech_ended: bool) -> None:
    # DTW ends "four" (burst 2.80-3.20) 300 ms early, beyond SEARCH_SECONDS of the pause after it.
    chunk = attrs.evolve(chunk_of(TEXTS, [0.0, 0.80, 1.50, 2.60], 2.90, bursts(BURSTS, 3.7)), speech_ended=speech_ended)
    (words,) = DtwAligner(refine=True).align(chunk)
    if speech_ended:
        assert words[-1].end == pytest.approx(3.20, abs=TOLERANCE)
    else:  # a later window decodes what follows: the word keeps DTW's end
        assert words[-1].end == pytest.approx(2.90, abs=TOLERANCE)
    assert FINAL_SEARCH_SECONDS > 0.3


def test_a_breath_between_two_leading_pauses_is_not_the_first_word() -> None:
    # 0.2-0.35 s: a quiet breath-like burst, then a pause, then the word at 0.5-1.0 s; DTW starts it at 0.
    pauses = np.array([[0.0, 0.2], [0.35, 0.5], [1.0, 1.5]])
    starts, ends = start_after_last_pause(np.array([0.0, 1.0]), np.array([1.0, 1.4]), pauses)
    assert starts.tolist() == [0.5, 1.0] and ends.tolist() == [1.0, 1.4]
    # a pause that would leave the word less than MIN_WORD_SECONDS of sound is not its start
    starts, _ = start_after_last_pause(np.array([0.0]), np.array([0.52]), pauses)
    assert starts.tolist() == [0.2]


def test_a_boundary_without_a_pause_moves_to_the_energy_dip_nearby() -> None:
    # Two tones that meet at 1.00 s with a 30-ms dip (-40 dB) there; DTW puts the boundary at 1.04 s.
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    samples = 0.3 * np.sin(2 * np.pi * 220 * t)
    samples[(t >= 0.985) & (t < 1.015)] *= 0.01
    levels = frame_levels(samples.astype(np.float32))
    starts, ends = snap_to_valleys(np.array([0.0, 1.04]), np.array([1.04, 2.0]), levels)
    assert starts[1] == ends[0] == pytest.approx(1.0, abs=0.011)
    # beyond VALLEY_SEARCH_SECONDS the dip is not this boundary's
    starts, ends = snap_to_valleys(np.array([0.0, 1.2]), np.array([1.2, 2.0]), levels)
    assert abs(starts[1] - 1.0) > 0.1 and starts[1] == ends[0]
    # a boundary with a gap (a pause put it there) stays
    starts, ends = snap_to_valleys(np.array([0.0, 1.1]), np.array([1.04, 2.0]), levels)
    assert starts.tolist() == [0.0, 1.1] and ends.tolist() == [1.04, 2.0]


@given(
    case=boundaries_and_pauses(),
    levels=st.lists(st.floats(-100.0, 0.0), min_size=0, max_size=600),
)
def test_valley_snapping_keeps_words_ordered_and_longer_than_a_frame(
    case: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]], levels: list[float]
) -> None:
    starts, ends, _ = case
    ends = np.minimum(ends, np.append(starts[1:], np.inf))  # ordered words, some meeting their neighbour
    after = snap_to_valleys(starts, ends, np.array(levels, dtype=np.float64))
    assert_still_ordered((starts, ends), after, min_length=0.01 - 1e-9)  # longer than one 10-ms frame


@given(case=boundaries_and_pauses())
def test_the_first_word_rule_keeps_words_ordered(
    case: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
) -> None:
    starts, ends, pauses = case
    new_starts, new_ends = start_after_last_pause(starts, ends, pauses)
    assert_still_ordered((starts, ends), (new_starts, new_ends))
    assert np.array_equal(new_starts[1:], starts[1:]) and np.array_equal(new_ends, ends)  # only the first start


def whole_array_attention_matrix(attention: NDArray[np.floating], median_width: int) -> NDArray[np.float32]:
    """The aligner's first steps as whole-array expressions (how ``attention_matrix`` was written before it went
    head by head): the oracle that the head-by-head version must equal exactly."""
    with np.errstate(over="ignore", invalid="ignore"):
        weights = np.nan_to_num(attention.astype(np.float32), nan=0.0)
        weights = weights - weights.max(axis=-1, keepdims=True)
        np.exp(weights, out=weights)
        weights /= weights.sum(axis=-1, keepdims=True)
        mean = weights.mean(axis=-2, keepdims=True)
        std = weights.std(axis=-2, keepdims=True)
        zscores = (weights - mean) / np.where(std > 0.0, std, np.float32(1.0))
    padded = np.pad(zscores, [(0, 0), (0, 0), (median_width // 2,) * 2], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, median_width, axis=-1)
    return np.asarray(np.median(windows, axis=-1).mean(axis=0), dtype=np.float32)


@given(chunk=decoded_chunks(extreme=True), width=st.sampled_from([1, 3, 7]))
def test_attention_matrix_equals_the_whole_array_formula(chunk: DecodedChunk, width: int) -> None:
    attention = chunk.attention
    if attention.shape[-1] == 0:
        return
    assert np.array_equal(attention_matrix(attention, width), whole_array_attention_matrix(attention, width))


@pytest.mark.parametrize("heads", [8, 10])  # tiny.en's and large-v3's alignment heads
def test_attention_matrix_at_model_shapes_equals_the_whole_array_formula(heads: int) -> None:
    attention = (3.0 * np.random.default_rng(heads).normal(size=(heads, 101, 1500))).astype(np.float32)
    attention[0, 5, 9], attention[1, 7, :] = np.nan, np.inf
    assert np.array_equal(attention_matrix(attention, 7), whole_array_attention_matrix(attention, 7))
