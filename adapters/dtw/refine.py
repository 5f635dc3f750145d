"""Audio-based refinement of DTW word boundaries: pauses, the window's first and last word, energy valleys.

DTW gives words without gaps, so a pause is absorbed by one of its neighbours: after a pause a word starts early by
about the pause, before one it ends late. Three steps, each on the window's own audio, in 10-ms frame levels (dB):

1. **Pauses.** A pause is a run of quiet frames; each word boundary (between two words, or a window's first start
   and last end) that lies in a pause, or within ``SEARCH_SECONDS`` of one, is moved onto it: the word before ends
   where the pause starts, the word after starts where it ends.
2. **The window's edges.** The end-of-text row tends to end the last word early (base: by ~290 ms on
   ljspeech_mfa), so when the decoder closed the window's speech (no tail left to decode), the last word ends where
   the first pause after it starts, up to ``FINAL_SEARCH_SECONDS`` later (with step 1). DTW pins the first word's
   start to the window's first frame, so, once step 1 has put its end on a pause, the first word starts where the
   last pause before it ends: a breath or click between two leading pauses is not the word.
3. **Energy valleys.** A boundary between two words with no pause between them moves to the quietest frame within
   ``VALLEY_SEARCH_SECONDS``: words in connected speech still meet at a dip of energy more often than not.

Boundaries never cross their neighbours, and a word that would be left without sound keeps its DTW edge.

Where the decoder scored the window's frames as word edges (``DecodedChunk.edge_logits``, a linear probe on the
encoder's output), a last step (``snap_to_edges``) moves each boundary that step 3 moved to the best-scored frame
within ``EDGE_SEARCH_SECONDS`` instead: the encoder sees edges that the energy alone does not show.

"Quiet" is relative to the window itself: frames in the lower third (``SILENCE_FRACTION``) of the range, in dB,
from the window's background (a low percentile of its frame levels) to its loud frames (the matching high
percentile). A window whose loud frames are not clearly above its background has no pause that can be trusted, and
nothing moves. The constants are few and relative; none is fitted to a file.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE

HOP_SECONDS = 0.01  # one energy frame = 10 ms (160 samples at 16 kHz), half a cross-attention frame
POWER_FLOOR = 1e-10  # -100 dB re full scale, below 16-bit quantisation noise: keeps log10 finite on digital silence
# heuristic: the quietest 5% of a window's frames are its background (pauses, breaths, room noise); speech windows
# almost always hold that much pause, and a lower percentile would follow single clicks or dropouts.
BACKGROUND_PERCENTILE = 5.0
# heuristic: a frame in the lower third of the window's range (background to loud, in dB) is silence. Pauses are
# not at the background level: room noise, hum and breaths spread them over 15-20 dB, while even weak consonants
# and word edges stay in the upper part of the range. A fixed margin over the background missed most pauses in
# recordings whose quietest frames are near digital silence (-90 dB).
SILENCE_FRACTION = 1.0 / 3.0
# heuristic: when the loudest 5% of frames are less than 20 dB above the background, the window is noise, music or
# speech without pauses, and its "quiet" frames are not pauses: refine nothing.
MIN_CONTRAST_DB = 20.0
# heuristic: shorter silences occur inside words (stop closures last ~50-100 ms) and are not word boundaries.
MIN_PAUSE_SECONDS = 0.1
# heuristic: how far a boundary may be from a pause and still snap to it; cross-attention frames are 20 ms and
# whisper's DTW boundaries are typically biased by 60-90 ms (BASELINE.md), rarely by more than ~150 ms.
SEARCH_SECONDS = 0.15
# heuristic: how far past its DTW end the window's last word may reach the pause after it. End-of-text's row ends
# the last word early by up to a few hundred ms (base on ljspeech_mfa: 290 ms mean); beyond half a second the sound
# after it is more likely speech the decoder left out than the end of that word.
FINAL_SEARCH_SECONDS = 0.5
# heuristic: the shortest word the first-word rule leaves (a "a" or "I" lasts ~50 ms).
MIN_WORD_SECONDS = 0.05
# heuristic: how far a boundary without a pause may move to an energy valley: about the spread of DTW's interior
# boundaries once the model's lag is removed (half of them within 50 ms), two and a half attention frames. Chosen on
# ljspeech_mfa (30, 50, 70, 100 ms tried; 50 best there), then checked on timit_dev.
VALLEY_SEARCH_SECONDS = 0.05
# heuristic: valleys are looked for in levels averaged over 3 frames (30 ms), so the gap between two glottal pulses
# or one quiet frame inside a vowel is not taken for a boundary (on ljspeech_mfa: 37 -> 38% of words with both edges
# within 50 ms, against single frames).
VALLEY_SMOOTHING_FRAMES = 3
# heuristic: how far a boundary without a pause may move to the encoder's most likely edge frame (``snap_to_edges``).
# Chosen on ljspeech_mfa (40, 60, 80, 100 ms tried, the probe cross-validated there), then checked on timit_dev
# (docs/alignment.md, issue 23).
EDGE_SEARCH_SECONDS = 0.1
# heuristic: the same reach where word starts come from the character-forcing pass (``--char-timing``), whose
# boundaries lie closer: chosen on ljspeech_mfa (40, 60, 80, 100 ms tried), checked on timit_dev (docs/alignment.md,
# issue 23 item 2).
CHAR_EDGE_SEARCH_SECONDS = 0.06


def frame_levels(samples: NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> NDArray[np.float64]:
    """Mean power in dB of consecutive 10-ms frames (the last one zero-padded); one value per frame."""
    hop = round(HOP_SECONDS * sample_rate)
    frames = -(-len(samples) // hop)  # ceil
    padded = np.zeros(frames * hop, dtype=np.float64)
    padded[: len(samples)] = samples
    power = np.mean(np.square(padded.reshape(frames, hop)), axis=1)  # (frames,)
    return np.asarray(10.0 * np.log10(power + POWER_FLOOR), dtype=np.float64)


def find_pauses(samples: NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> NDArray[np.float64]:
    """The pauses of one window: pauses × (start, end) in seconds from its start, in order and disjoint."""
    return pauses_in(frame_levels(samples, sample_rate), len(samples) / sample_rate)


def pauses_in(levels: NDArray[np.float64], duration: float) -> NDArray[np.float64]:
    """``find_pauses`` on frame levels already computed (``frame_levels``) of audio lasting ``duration`` seconds."""
    none = np.zeros((0, 2), dtype=np.float64)
    if not has_contrast(levels):
        return none
    background, loud = _range(levels)
    threshold = background + SILENCE_FRACTION * (loud - background)  # dB
    silent = np.concatenate(([0], (levels < threshold).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(silent))  # alternating run starts and ends, in frames
    runs = edges.reshape(-1, 2) * HOP_SECONDS  # pauses × (start, end)
    runs[:, 1] = np.minimum(runs[:, 1], duration)  # the last frame may be partial
    return np.asarray(runs[runs[:, 1] - runs[:, 0] >= MIN_PAUSE_SECONDS - 1e-9], dtype=np.float64)


def has_contrast(levels: NDArray[np.float64]) -> bool:
    """Whether the window's loud frames stand clearly above its background: only then do its dips mean anything."""
    if levels.size == 0:
        return False
    background, loud = _range(levels)
    return bool(loud - background >= MIN_CONTRAST_DB)


def _range(levels: NDArray[np.float64]) -> tuple[float, float]:
    background, loud = np.percentile(levels, [BACKGROUND_PERCENTILE, 100.0 - BACKGROUND_PERCENTILE])
    return float(background), float(loud)


def refine_words(
    starts: NDArray[np.float64], ends: NDArray[np.float64], samples: NDArray[np.floating], *, speech_ended: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """All three steps on one window's words (seconds from its start, ordered) and its samples (16 kHz).

    ``speech_ended``: the decoder closed the window's speech, so no later window decodes the sound after its last
    word, which may then be given to that word.
    """
    levels = frame_levels(samples)
    pauses = pauses_in(levels, len(samples) / SAMPLE_RATE)
    if len(starts) == 0 or len(pauses) == 0:  # no contrast, or no pause: no step can be trusted
        return starts.astype(np.float64), ends.astype(np.float64)
    starts, ends = refine_boundaries(starts, ends, pauses, final_search=FINAL_SEARCH_SECONDS if speech_ended else 0.0)
    starts, ends = start_after_last_pause(starts, ends, pauses)  # after the first word's end is on its pause
    return snap_to_valleys(starts, ends, levels)


def start_after_last_pause(
    starts: NDArray[np.float64], ends: NDArray[np.float64], pauses: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The first word starts no earlier than the end of the last pause before it (DTW pins it to the first frame).

    Only pauses that leave the word ``MIN_WORD_SECONDS`` of sound count.
    """
    starts, ends = starts.astype(np.float64), ends.astype(np.float64)
    if len(starts) == 0:
        return starts, ends
    before = pauses[pauses[:, 1] <= ends[0] - MIN_WORD_SECONDS]
    if len(before) and before[-1, 1] > starts[0]:
        starts[0] = before[-1, 1]
    return starts, ends


def refine_boundaries(
    starts: NDArray[np.float64],
    ends: NDArray[np.float64],
    pauses: NDArray[np.float64],
    *,
    final_search: float = 0.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Move word boundaries onto nearby pauses.

    Parameters
    ----------
    starts, ends
        (words,) seconds, ordered: ``starts[i] <= ends[i] <= starts[i + 1]``.
    pauses
        pauses × (start, end) seconds, as ``find_pauses`` returns them.
    final_search
        seconds: the last word's end, unless it lies in a pause, moves forward to the start of the first pause
        after it if that starts at most this much later (else to the nearest pause, as every boundary).

    Returns
    -------
    New (starts, ends), still ordered; a word whose edge moved keeps a positive length.
    """
    starts, ends = starts.astype(np.float64), ends.astype(np.float64)
    words = len(starts)
    if words == 0 or len(pauses) == 0:
        return starts, ends
    for k in range(words + 1):  # the boundary before word k (k == words: after the last word)
        before, after = k - 1 if k > 0 else None, k if k < words else None
        lo = ends[before] if before is not None else starts[k]  # the boundary, a gap [lo, hi] where DTW left one
        hi = starts[after] if after is not None else ends[k - 1]
        pause = _nearest_pause(pauses, lo, hi)
        if after is None and not (pause is not None and pause[0] <= lo <= pause[1]):  # the last end, not in a pause
            pause = _next_pause(pauses, lo, final_search) or pause
        if pause is None:
            continue
        pause_start, pause_end = pause
        # A word that the pause would swallow whole keeps its DTW edge.
        end = -np.inf if before is None else pause_start if pause_start > starts[before] else lo
        start = np.inf if after is None else pause_end if pause_end < ends[after] else hi
        if end > start:  # the pause lies beyond one of the two words: not their boundary
            continue
        if before is not None:
            ends[before] = end
        if after is not None:
            starts[after] = start
    return starts, ends


def snap_to_valleys(
    starts: NDArray[np.float64], ends: NDArray[np.float64], levels: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Move each boundary shared by two words (no gap between them) to the quietest 10-ms frame within
    ``VALLEY_SEARCH_SECONDS`` (levels averaged over ``VALLEY_SMOOTHING_FRAMES``), keeping both words longer than one
    frame. ``levels`` as ``frame_levels`` gives them."""
    starts, ends = starts.astype(np.float64), ends.astype(np.float64)
    if len(starts) < 2 or levels.size == 0:
        return starts, ends
    reach = round(VALLEY_SEARCH_SECONDS / HOP_SECONDS)
    kernel = np.full(VALLEY_SMOOTHING_FRAMES, 1.0 / VALLEY_SMOOTHING_FRAMES)
    padded = np.pad(levels, VALLEY_SMOOTHING_FRAMES // 2, mode="edge")
    levels = np.convolve(padded, kernel, mode="valid")  # (frames,)
    for k in range(1, len(starts)):
        boundary = starts[k]
        if ends[k - 1] != boundary:  # a gap: a pause put it there, or whisper's heuristics
            continue
        centre = int(boundary / HOP_SECONDS)  # the frame holding the boundary
        # frames j whose centre (j + 1/2) h leaves both words longer than one frame h
        lo = max(centre - reach, int(np.floor(starts[k - 1] / HOP_SECONDS + 0.5)) + 1)
        hi = min(centre + reach, int(np.ceil(ends[k] / HOP_SECONDS - 1.5)) - 1, len(levels) - 1)
        if lo > hi:
            continue
        frame = lo + int(np.argmin(levels[lo : hi + 1]))
        ends[k - 1] = starts[k] = (frame + 0.5) * HOP_SECONDS
    return starts, ends


def snap_to_edges(
    starts: NDArray[np.float64],
    ends: NDArray[np.float64],
    logits: NDArray[np.floating],
    frame_seconds: float,
    reach: float = EDGE_SEARCH_SECONDS,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Move each boundary shared by two words (no gap: no pause put it there) to the centre of the frame within
    ``reach`` that the encoder's edge probe scores highest (``logits``, one per frame), keeping both words longer
    than half a frame. Boundaries at pauses keep the audio's edges."""
    starts, ends = starts.astype(np.float64), ends.astype(np.float64)
    if len(starts) < 2 or logits.size == 0:
        return starts, ends
    for k in range(1, len(starts)):
        boundary = starts[k]
        if ends[k - 1] != boundary:
            continue
        lo = max(int((boundary - reach) / frame_seconds), int(starts[k - 1] / frame_seconds) + 1)
        hi = min(int((boundary + reach) / frame_seconds), int(ends[k] / frame_seconds) - 1, logits.size - 1)
        if lo > hi:
            continue
        frame = lo + int(np.argmax(logits[lo : hi + 1]))
        ends[k - 1] = starts[k] = (frame + 0.5) * frame_seconds
    return starts, ends


def _nearest_pause(pauses: NDArray[np.float64], lo: float, hi: float) -> tuple[float, float] | None:
    """The pause closest to the interval [lo, hi], the longest on ties, if one is within ``SEARCH_SECONDS``."""
    distance = np.maximum(0.0, np.maximum(pauses[:, 0] - hi, lo - pauses[:, 1]))  # (pauses,) 0 where they overlap
    near = np.flatnonzero(distance <= SEARCH_SECONDS)
    if near.size == 0:
        return None
    length = pauses[near, 1] - pauses[near, 0]
    best = near[np.lexsort((-length, distance[near]))[0]]
    return float(pauses[best, 0]), float(pauses[best, 1])


def _next_pause(pauses: NDArray[np.float64], time: float, search: float) -> tuple[float, float] | None:
    """The first pause that starts after ``time``, if it starts within ``search`` seconds."""
    later = pauses[(pauses[:, 0] > time) & (pauses[:, 0] - time <= search)]
    return (float(later[0, 0]), float(later[0, 1])) if len(later) else None
