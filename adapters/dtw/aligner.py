"""``DtwAligner``: word times from the alignment heads' cross-attention, as openai-whisper's ``timing.py`` does.

Steps (``find_alignment`` and ``add_word_timestamps``): softmax over the window's real frames, z-score over tokens,
median filter along time, mean over heads, DTW on the negated matrix; a token's time is where the path first reaches
its row; a word runs from its first token's time to the next word's (the last word's end is end-of-text's time).
Then whisper's heuristics: long words at sentence ends are truncated, punctuation merges into its neighbour, the
first word after a pause and the segment's first and last words are reconciled with the segment's timestamps.
The steps up to the token times may have run already where the attention was captured (a GPU decoder aligns its
whole batch there: ``DecodedChunk.token_frames``); the rest, from the token times on, is the same either way.
Where the chunk carries a character-forcing pass's rows (``DecodedChunk.char_rows``, ``--char-timing``), each
word's tokens take the frame where DTW over those rows reaches the word's first character (the end-of-text frame,
the last row's), instead of their own rows' frames. Optionally (``refine``): the model's lag (``lag_seconds``, estimated from the speech in ``lag.py``) is taken off
DTW's times, and boundaries move onto the pauses, window edges and energy valleys of the window's audio
(``refine.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from attrs import define, field, frozen
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.filters import median_filter
from onepass_whisper.adapters.dtw.path import dtw_path
from onepass_whisper.adapters.dtw.refine import EDGE_SEARCH_SECONDS, refine_words, snap_to_edges
from onepass_whisper.domain.audio import ChunkSegment, DecodedChunk
from onepass_whisper.domain.model import Word

PREPEND_PUNCTUATIONS = "\"'“¿([{-"  # merged into the following word (whisper's defaults)
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # merged into the previous word
SENTENCE_END_MARKS = ".。!！?？"
MAX_MEDIAN_DURATION = 0.7  # seconds; heuristic (whisper): cap on the median word duration used by the heuristics
# heuristic: how far a word's start from its characters' rows may stray from its word pieces' start (both DTW's, the
# window's median shift between the two taken off) and still be taken; further, the characters' DTW has lost the
# words (tiny.en's over a long window drifted by seconds) and the word pieces' start, shifted by the median, stands.
# The phonetic aligner's guard (``adapters/phonetic``), not tuned here.
CHAR_GUARD_SECONDS = 0.3


@define
class _Timing:
    """A word while the heuristics rework it; ``merged`` once its text went into a neighbour."""

    text: str
    start: float
    end: float
    probability: float
    merged: bool = False


def _odd_width(_instance: object, _attribute: object, width: int) -> None:
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median_width must be a positive odd number, got {width}")


@frozen
class DtwAligner:
    """Times words from a decoded chunk's cross-attention with a median filter and DTW (implements ``Aligner``).

    ``refine=False`` gives the pure DTW timing with whisper's heuristics, as openai-whisper; ``refine=True`` takes
    ``lag_seconds`` (how late the model's attention comes, on average; negative: early) off DTW's times and moves
    boundaries onto what the window's audio shows (``refine.py``), and where the model has an edge probe, moves
    boundaries without a pause to its best frame within ``edge_reach`` seconds.
    """

    median_width: int = field(default=7, validator=_odd_width)
    refine: bool = True
    lag_seconds: float = 0.0
    edge_reach: float = EDGE_SEARCH_SECONDS

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        """The words of each of ``chunk``'s segments, in seconds from the window's start."""
        segments = chunk.segments
        if not segments:  # nothing decoded: the attention may hold only end-of-text's row, or nothing
            return ()
        tokens = _check_shapes(chunk)
        duration = chunk.window.duration
        if chunk.char_rows is not None:
            token_times = char_token_frames(chunk, self.median_width).astype(np.float64) * chunk.frame_seconds
        elif chunk.token_frames is None:
            token_times = self.token_times(chunk.attention, chunk.frame_seconds)  # (tokens + 1,) seconds
        else:  # DTW ran on the device
            token_times = chunk.token_frames.astype(np.float64) * chunk.frame_seconds
        if self.refine and self.lag_seconds:  # DTW pins the first row to the first frame: that time carries no lag
            token_times[1:] = (token_times[1:] - self.lag_seconds).clip(0.0, duration)
        probabilities = np.nan_to_num(chunk.token_probabilities.astype(np.float64), nan=0.0).clip(0.0, 1.0)
        per_segment = _word_timings(segments, token_times, probabilities, tokens)
        median_duration, max_duration = _typical_durations([w for ws in per_segment for w in ws])
        _truncate_at_sentence_ends([w for ws in per_segment for w in ws], max_duration)
        for words in per_segment:
            _merge_punctuations(words)
        kept = [[w for w in words if not w.merged] for words in per_segment]
        _reconcile_with_segments(segments, kept, median_duration, max_duration)

        flat = [w for words in kept for w in words]
        starts, ends = _ordered([w.start for w in flat], [w.end for w in flat], duration)
        if self.refine:
            refined = refine_words(starts, ends, chunk.window.samples, speech_ended=chunk.speech_ended)
            starts, ends = _ordered(*refined, duration)
            if chunk.edge_logits is not None:
                starts, ends = snap_to_edges(starts, ends, chunk.edge_logits, chunk.frame_seconds, self.edge_reach)
        for word, start, end in zip(flat, starts.tolist(), ends.tolist(), strict=True):
            word.start, word.end = start, end
        return tuple(tuple(Word(w.text, w.start, w.end, w.probability) for w in words) for words in kept)

    def token_times(self, attention: NDArray[np.floating], frame_seconds: float) -> NDArray[np.float64]:
        """Seconds at which DTW places each attention row (text tokens, then end-of-text).

        ``attention`` is heads × rows × frames, raw pre-softmax QK. With no frames, every time is 0.
        """
        return np.asarray(token_frames(attention, self.median_width) * frame_seconds, dtype=np.float64)


def token_frames(attention: NDArray[np.floating], median_width: int = 7) -> NDArray[np.intp]:
    """The frame at which DTW's path first reaches each attention row (heads × rows × frames raw QK); all 0 with no
    frames. What ``adapters/mlx/alignment.py`` computes on the device for a whole batch."""
    _heads, rows, frames = attention.shape
    if frames == 0:
        return np.zeros(rows, dtype=np.intp)
    matrix = attention_matrix(attention, median_width)  # rows × frames
    path_rows, path_frames = dtw_path(-matrix)
    first_visit = np.diff(path_rows, prepend=-1).astype(bool)  # the path enters each row exactly once
    frames_of_rows: NDArray[np.intp] = path_frames[first_visit]
    return frames_of_rows


def piece_token_frames(chunk: DecodedChunk, median_width: int = 7) -> NDArray[np.int32]:
    """The chunk's token frames from its word pieces' rows: the device's where it computed them, else DTW's here."""
    if chunk.token_frames is not None:
        return chunk.token_frames.astype(np.int32)
    return token_frames(chunk.attention, median_width).astype(np.int32)


def char_token_frames(chunk: DecodedChunk, median_width: int = 7, guard: bool = True) -> NDArray[np.int32]:
    """The chunk's token frames from its character rows (``DecodedChunk.char_rows``): every token of a word at the
    frame where DTW over the characters reaches the word's first character, end-of-text's at the last row's.

    A window spelled in several runs gives each run the stretch of frames from where the word pieces' DTW starts
    its first word to where it starts the next run's (the first run from the window's start, the last to its end).
    A start further than ``CHAR_GUARD_SECONDS`` from its word pieces' start (the window's median shift between the
    two taken off) is the word pieces' start, shifted by that median (``guard``; off, the characters' DTW alone).
    """
    runs = chunk.char_rows or ()
    counts = np.array([c for s in chunk.segments for c in s.word_token_counts], dtype=np.intp)
    if sum(len(run.firsts) for run in runs) != counts.size or any(
        run.first_word != sum(len(r.firsts) for r in runs[:k]) for k, run in enumerate(runs)
    ):
        raise ValueError(f"char_rows must cover the chunk's {counts.size} words in order, run after run")
    frames = max((run.attention.shape[-1] for run in runs), default=0)
    bounds = [0, frames]
    if len(runs) > 1:
        first_token = np.concatenate(([0], np.cumsum(counts)))
        pieces = piece_token_frames(chunk, median_width)
        bounds = [0, *(min(int(pieces[first_token[run.first_word]]), frames) for run in runs[1:]), frames]
    starts = np.zeros(counts.size, dtype=np.int32)
    end = 0
    for k, run in enumerate(runs):
        lo, hi = bounds[k], max(bounds[k], bounds[k + 1])
        if run.attention.shape[1] <= max(run.firsts, default=0):
            raise ValueError(f"char_rows: {run.attention.shape[1]} rows for a first character at row {max(run.firsts)}")
        path = token_frames(run.attention[:, :, lo:hi], median_width) + lo
        starts[run.first_word : run.first_word + len(run.firsts)] = path[run.firsts]
        end = int(path[-1])
    if guard and counts.size and frames:
        first_token = np.concatenate(([0], np.cumsum(counts)))
        pieces = piece_token_frames(chunk, median_width)
        piece_starts = pieces[first_token[:-1]]
        shift = int(np.median(starts - piece_starts))
        reach = CHAR_GUARD_SECONDS / chunk.frame_seconds
        lost = np.abs(starts - piece_starts - shift) > reach
        starts[lost] = np.clip(piece_starts[lost] + shift, 0, frames)
        starts = np.maximum.accumulate(starts)  # in order again where a fallback passed a neighbour
    return np.append(np.repeat(starts, counts), np.int32(end)).astype(np.int32)


def attention_matrix(attention: NDArray[np.floating], median_width: int = 7) -> NDArray[np.float32]:
    """heads × rows × frames raw QK -> rows × frames: softmax over frames, z-score over rows, median, head mean.

    Infinite or NaN scores are replaced by the extreme finite values (NaN by 0), so any input gives finite output.
    One head at a time: each step of a head (rows × frames, ~600 kB at large-v3's 100 tokens) then reads what the
    step before left in the cache, instead of the whole attention from memory; every head's values are the ones the
    whole-array expressions give (each step works along frames or rows of one head), so the result is identical.
    """
    heads = attention.shape[0]
    filtered = np.empty(attention.shape, dtype=np.float32)  # heads × rows × frames, after the median filter
    for head in range(heads):
        filtered[head] = median_filter(_zscores(attention[head]), median_width)
    return np.asarray(filtered.mean(axis=0), dtype=np.float32)


def _zscores(scores: NDArray[np.floating]) -> NDArray[np.float32]:
    """One head's rows × frames raw QK -> softmax over frames, then z-score over rows (float32, a new array)."""
    # float32 throughout (half the memory traffic of float64): with the maximum subtracted every exponent is <= 0,
    # and differences of float32 extremes that overflow to -inf give exp(-inf) = 0, as they should
    weights = scores.astype(np.float32)  # a copy, worked on in place
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(weights).all():
            np.nan_to_num(weights, copy=False, nan=0.0)
        weights -= weights.max(axis=-1, keepdims=True)
        np.exp(weights, out=weights)  # softmax over frames
        weights /= weights.sum(axis=-1, keepdims=True)  # the row maximum contributes exp(0) = 1: never 0
        mean = weights.mean(axis=-2, keepdims=True)
        std = weights.std(axis=-2, keepdims=True)  # population std over rows, as whisper
        weights -= mean
        weights /= np.where(std > 0.0, std, np.float32(1.0))  # all rows equal -> 0
    return weights


def _check_shapes(chunk: DecodedChunk) -> int:
    """The chunk's text token count; ``ValueError`` where the arrays do not match its segments."""
    tokens = chunk.token_count
    attention = chunk.attention
    if chunk.token_frames is not None:
        if chunk.token_frames.shape != (tokens + 1,):
            raise ValueError(f"token_frames must have shape ({tokens + 1},), got {chunk.token_frames.shape}")
    elif attention.ndim != 3 or attention.shape[0] == 0 or attention.shape[1] != tokens + 1:
        expected = f"heads × {tokens + 1} (tokens + end-of-text) × frames"
        raise ValueError(f"attention must be {expected}, got {attention.shape}")
    if chunk.token_probabilities.shape != (tokens,):
        raise ValueError(f"token_probabilities must have shape ({tokens},), got {chunk.token_probabilities.shape}")
    for segment in chunk.segments:
        if len(segment.words) != len(segment.word_token_counts) or min(segment.word_token_counts, default=0) < 0:
            raise ValueError(f"segment {segment.text!r}: words and word_token_counts do not match")
    return tokens


def _word_timings(
    segments: Sequence[ChunkSegment],
    token_times: NDArray[np.float64],
    probabilities: NDArray[np.float64],
    tokens: int,
) -> list[list[_Timing]]:
    """Per segment, each word from its first token's time to the next word's; mean token probability."""
    counts = [c for s in segments for c in s.word_token_counts]
    first = np.concatenate(([0], np.cumsum(counts, dtype=np.intp)))  # (words + 1,) the last is end-of-text's row
    assert first[-1] == tokens
    per_segment: list[list[_Timing]] = []
    index = 0
    for segment in segments:
        words: list[_Timing] = []
        for text in segment.words:
            lo, hi = int(first[index]), int(first[index + 1])
            probability = float(probabilities[lo:hi].mean()) if hi > lo else 0.0
            words.append(_Timing(text, float(token_times[lo]), float(token_times[hi]), probability))
            index += 1
        per_segment.append(words)
    return per_segment


def _typical_durations(words: Sequence[_Timing]) -> tuple[float, float]:
    """whisper's median word duration (non-zero durations, capped) and the maximum it allows (twice that)."""
    durations = np.array([w.end - w.start for w in words], dtype=np.float64)
    durations = durations[durations.nonzero()]
    median = min(MAX_MEDIAN_DURATION, float(np.median(durations))) if durations.size else 0.0
    return median, 2.0 * median


def _is_sentence_end(text: str) -> bool:
    return text != "" and text in SENTENCE_END_MARKS


def _truncate_at_sentence_ends(words: Sequence[_Timing], max_duration: float) -> None:
    """heuristic (whisper): DTW stretches a sentence end mark, or the word after one, over the pause next to it."""
    if max_duration <= 0.0:
        return
    for previous, word in zip(words, words[1:]):
        if word.end - word.start > max_duration:
            if _is_sentence_end(word.text):
                word.end = word.start + max_duration
            elif _is_sentence_end(previous.text):
                word.start = word.end - max_duration


def _only(chars: str, text: str) -> bool:
    return all(c in chars for c in text)


def _merge_punctuations(words: Sequence[_Timing]) -> None:
    """Within one segment, merge words made only of punctuation into their neighbour, as whisper does.

    Opening marks (with their leading space) go to the following word, closing marks to the previous one; the
    receiving word keeps its times and probability.
    """
    following = len(words) - 1
    for i in range(len(words) - 2, -1, -1):
        word = words[i]
        if word.text.startswith(" ") and _only(PREPEND_PUNCTUATIONS, word.text.strip()):
            words[following].text = word.text + words[following].text
            word.text, word.merged = "", True
        else:
            following = i
    previous = 0
    for j in range(1, len(words)):
        word = words[j]
        receiver = words[previous]
        closing = word.text != "" and _only(APPEND_PUNCTUATIONS, word.text)
        if closing and not receiver.merged and not receiver.text.endswith(" "):
            receiver.text += word.text
            word.text, word.merged = "", True
        else:
            previous = j


def _reconcile_with_segments(
    segments: Sequence[ChunkSegment], words: Sequence[list[_Timing]], median: float, max_duration: float
) -> None:
    """heuristic (whisper): shorten the first word after a pause and prefer the segment's timestamps over a long
    first or last word. The window's start counts as the end of the last speech."""
    last_speech = 0.0
    for segment, ws in zip(segments, words, strict=True):
        if not ws:
            continue
        first = ws[0]
        if first.end - last_speech > 4.0 * median and (
            first.end - first.start > max_duration or (len(ws) > 1 and ws[1].end - first.start > 2.0 * max_duration)
        ):
            if len(ws) > 1 and ws[1].end - ws[1].start > max_duration:
                boundary = max(ws[1].end / 2.0, ws[1].end - max_duration)
                first.end = ws[1].start = boundary
            first.start = max(0.0, first.end - max_duration)
        if segment.start < first.end and segment.start - 0.5 > first.start:
            first.start = max(0.0, min(first.end - median, segment.start))
        last = ws[-1]
        if segment.end > last.start and segment.end + 0.5 < last.end:
            last.end = max(last.start + median, segment.end)
            last_speech = segment.end
        else:
            last_speech = last.end


def _ordered(
    starts: Sequence[float] | NDArray[np.float64], ends: Sequence[float] | NDArray[np.float64], duration: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Make ``start[0] <= end[0] <= start[1] <= ...`` inside [0, duration]: a time past a later one is pulled back.

    Only whisper's heuristics can break the order (a last word stretched to its segment's end or past the window).
    """
    times = np.column_stack((starts, ends)).astype(np.float64).ravel()  # (2 × words,) start, end, start, ...
    times = np.minimum.accumulate(times[::-1])[::-1].clip(0.0, max(duration, 0.0))
    return times[0::2].copy(), times[1::2].copy()
