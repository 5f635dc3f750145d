"""Audio-based refinement of DTW word boundaries: move them onto the edges of nearby pauses.

DTW gives words without gaps, so a pause is absorbed by one of its neighbours: after a pause a word starts early by
about the pause, before one it ends late. Here a pause is a run of quiet 10-ms frames; each word boundary (between
two words, or a window's first start and last end) that lies in a pause, or within ``SEARCH_SECONDS`` of one, is
moved onto the pause: the word before ends where the pause starts, the word after starts where it ends. Boundaries
never cross their neighbours, and a word that would be left without sound keeps its DTW edge.

"Quiet" is relative to the window itself: frames in the lower third (``SILENCE_FRACTION``) of the range, in dB,
from the window's background (a low percentile of its frame levels) to its loud frames (the matching high
percentile). A window whose loud frames are not clearly above its background has no pause that can be trusted, and
nothing moves. The constants are few and relative; none is fitted to a file.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from domain.audio import SAMPLE_RATE

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
    none = np.zeros((0, 2), dtype=np.float64)
    levels = frame_levels(samples, sample_rate)  # (frames,) dB
    if levels.size == 0:
        return none
    background, loud = np.percentile(levels, [BACKGROUND_PERCENTILE, 100.0 - BACKGROUND_PERCENTILE])
    if loud - background < MIN_CONTRAST_DB:
        return none
    threshold = background + SILENCE_FRACTION * (loud - background)  # dB
    silent = np.concatenate(([0], (levels < threshold).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(silent))  # alternating run starts and ends, in frames
    runs = edges.reshape(-1, 2) * HOP_SECONDS  # pauses × (start, end)
    runs[:, 1] = np.minimum(runs[:, 1], len(samples) / sample_rate)  # the last frame may be partial
    return np.asarray(runs[runs[:, 1] - runs[:, 0] >= MIN_PAUSE_SECONDS - 1e-9], dtype=np.float64)


def refine_boundaries(
    starts: NDArray[np.float64], ends: NDArray[np.float64], pauses: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Move word boundaries onto nearby pauses.

    Parameters
    ----------
    starts, ends
        (words,) seconds, ordered: ``starts[i] <= ends[i] <= starts[i + 1]``.
    pauses
        pauses × (start, end) seconds, as ``find_pauses`` returns them.

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


def _nearest_pause(pauses: NDArray[np.float64], lo: float, hi: float) -> tuple[float, float] | None:
    """The pause closest to the interval [lo, hi], the longest on ties, if one is within ``SEARCH_SECONDS``."""
    distance = np.maximum(0.0, np.maximum(pauses[:, 0] - hi, lo - pauses[:, 1]))  # (pauses,) 0 where they overlap
    near = np.flatnonzero(distance <= SEARCH_SECONDS)
    if near.size == 0:
        return None
    length = pauses[near, 1] - pauses[near, 0]
    best = near[np.lexsort((-length, distance[near]))[0]]
    return float(pauses[best, 0]), float(pauses[best, 1])
