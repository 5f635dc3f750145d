"""A model's lag from the run's own audio: no table, any model, any language (issue 23, item 1).

Whisper's alignment heads do not attend exactly where a word sounds: each model's DTW boundaries come out early or
late by tens of ms, on starts and ends alike (``docs/alignment.md``). ``DtwAligner`` takes that lag off DTW's times
before the refinement. It is a property of the model's heads, not of the audio, but it cannot come from a table of
known models (a user brings any hub or local model), so it is estimated from the speech being timed:
DTW's interior word starts (refinement off), each pulled to the quietest 10-ms frame (levels smoothed over 30 ms)
within ``VALLEY_REACH_SECONDS``: where words meet, the energy dips. The lag moves by the median pull until it
settles. One window holds too few boundaries for that median to settle, so the estimate pools windows: a file's, or
a run's (``application/transcription.py`` decides which, and keeps it when it has nothing to pool).

``LagAligner`` is the DTW aligner in two phases: ``measure`` runs DTW on a window (its token times kept, its
attention dropped) and gives the window's evidence; once a file's or a run's evidence is in, ``with_lag`` times the
measured windows with the estimated lag, without DTW again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from attrs import evolve, frozen
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.aligner import DtwAligner, char_token_frames, piece_token_frames, token_frames
from onepass_whisper.adapters.dtw.refine import HOP_SECONDS, frame_levels, has_contrast
from onepass_whisper.domain.audio import DecodedChunk, LagEvidence
from onepass_whisper.domain.model import Word

# heuristic: how far from a boundary its valley is looked for: half the spacing of syllables in read speech (~200 ms),
# so that the valley found is more often the boundary's own than the neighbouring syllable's.
VALLEY_REACH_SECONDS = 0.1
# heuristic: the estimate is moved by the median pull until it stops moving (a 10-ms grid); on the evaluation
# folders it settles within 5-10 rounds.
VALLEY_ROUNDS = 12
# heuristic: the word starts an estimate needs before it is trusted (about two minutes of speech): below that,
# estimates from random subsets of ljspeech_mfa's windows (base) missed the whole set's by over 20 ms in half the
# draws (docs/alignment.md); fewer, and the caller falls back.
MIN_BOUNDARIES = 250
# heuristic: a start "on" its valley lies within two 10-ms frames of it (``valley_agreement``).
VALLEY_AGREEMENT_SECONDS = 0.02


def window_evidence(
    starts: NDArray[np.float64], samples: NDArray[np.floating], shifts: NDArray[np.float64] | None = None
) -> LagEvidence:
    """A window's evidence: its interior word starts (seconds, DTW's raw times) and its 10-ms levels, and where the
    starts are the character rows', their ``shifts`` from the word pieces'; none where the window has no contrast
    (no dip means anything there) or no interior start."""
    levels = frame_levels(samples)
    if starts.size < 1 or not has_contrast(levels):
        return LagEvidence()
    return LagEvidence(starts.astype(np.float64), levels, np.zeros(0) if shifts is None else shifts)


def valley_pulls(boundaries: NDArray[np.float64], levels: NDArray[np.float64], lag: float) -> NDArray[np.float64]:
    """Seconds from each boundary (``lag`` taken off) to the quietest 10-ms frame (levels smoothed over 30 ms) within
    ``VALLEY_REACH_SECONDS``; ``levels`` as ``frame_levels`` gives them. A boundary whose quietest frame is at the
    edge of its reach has no valley there (the level only falls towards a pause or a quieter syllable further on)
    and pulls nowhere: counted, those edges pulled base's estimate on ljspeech_mfa 40 ms too early
    (``docs/alignment.md``)."""
    smooth = np.convolve(np.pad(levels, 1, mode="edge"), np.full(3, 1.0 / 3.0), mode="valid")
    reach = round(VALLEY_REACH_SECONDS / HOP_SECONDS)
    pulls = []
    for time in boundaries - lag:
        centre = int(time / HOP_SECONDS)
        lo, hi = max(0, centre - reach), min(len(smooth) - 1, centre + reach)
        if hi - lo < 2:
            continue
        quietest = int(np.argmin(smooth[lo : hi + 1]))
        if 0 < quietest < hi - lo:
            pulls.append((lo + quietest - centre) * HOP_SECONDS)
    return np.array(pulls, dtype=np.float64)


def estimate_lag(evidence: Sequence[LagEvidence], min_boundaries: int = MIN_BOUNDARIES) -> float | None:
    """The lag (seconds, positive: late) that leaves the windows' word starts no median pull towards an energy
    valley; None with fewer than ``min_boundaries`` boundaries.

    Starts from character rows (every window's evidence has ``shifts``) may lag by more than a valley's reach, so
    that the pulls settle on the wrong valleys (a model's characters can come far later than its word pieces:
    ``docs/alignment.md``): their search starts from the word pieces' lag (their starts are the characters' less
    the shifts) plus the median shift."""
    kept = [e for e in evidence if e.boundaries > 0]
    if sum(e.boundaries for e in kept) < max(1, min_boundaries):
        return None
    initial = 0.0
    if all(e.shifts.size == e.boundaries for e in kept):
        pieces = _settled([LagEvidence(e.starts - e.shifts, e.levels) for e in kept], 0.0)
        if pieces is None:
            return None
        initial = pieces + float(np.median(np.concatenate([e.shifts for e in kept])))
    return _settled(kept, initial)


def valley_agreement(evidence: Sequence[LagEvidence]) -> float | None:
    """How well the windows' word starts sit on the energy valleys, their lag settled (from 0) and taken off: the
    share of the starts that a valley pulls (``valley_pulls``) that it pulls by at most ``VALLEY_AGREEMENT_SECONDS``.
    A word timing that follows the speech keeps its starts near the dips between words at one lag; one that drifts
    cannot. None where nothing pulls."""
    kept = [e for e in evidence if e.boundaries > 0]
    lag = _settled(kept, 0.0) if kept else None
    if lag is None:
        return None
    pulls = np.concatenate([valley_pulls(e.starts, e.levels, lag) for e in kept])
    return float(np.mean(np.abs(pulls) <= VALLEY_AGREEMENT_SECONDS + 1e-9))


def _settled(kept: Sequence[LagEvidence], lag: float) -> float | None:
    """From ``lag`` on, the lag moved by the median pull until it stops moving; None where nothing pulls."""
    for _ in range(VALLEY_ROUNDS):
        pulls = np.concatenate([valley_pulls(e.starts, e.levels, lag) for e in kept])
        if pulls.size == 0:
            return None
        step = float(np.median(pulls))
        lag -= step
        if abs(step) < HOP_SECONDS / 2:
            break
    return round(lag, 4)


@frozen
class LagAligner:
    """The DTW aligner whose lag is estimated from the speech it times (implements ``LagMeasuringAligner``).

    ``align`` times a window with ``inner``'s lag as it is (the caller's fallback); ``measure`` and ``with_lag``
    are the two phases.
    """

    inner: DtwAligner = DtwAligner()
    min_boundaries: int = MIN_BOUNDARIES

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        return self.inner.align(chunk)

    def measure(self, chunk: DecodedChunk) -> tuple[DecodedChunk, LagEvidence]:
        """``chunk`` with DTW's token frames (its attention and character rows dropped), and its evidence of the
        model's lag: from the characters' rows where it has them, so the lag is the one they have."""
        if not chunk.segments:
            return chunk, LagEvidence()
        raw_aligner = evolve(self.inner, refine=False)
        shifts = None
        if chunk.char_rows is not None:  # the words' starts from their characters (``DecodedChunk.char_rows``)
            pieces = evolve(chunk, token_frames=piece_token_frames(chunk, self.inner.median_width), char_rows=None)
            frames = char_token_frames(chunk, self.inner.median_width)
            chunk = evolve(chunk, token_frames=frames, attention=np.empty((0, 0, 0), np.float32), char_rows=None)
            shifts = _starts(raw_aligner.align(chunk)) - _starts(raw_aligner.align(pieces))
        elif chunk.token_frames is None:
            frames = token_frames(chunk.attention, self.inner.median_width).astype(np.int32)
            chunk = evolve(chunk, token_frames=frames, attention=np.empty((0, 0, 0), np.float32))
        return chunk, window_evidence(_starts(raw_aligner.align(chunk)), chunk.window.samples, shifts)

    def estimate_lag(self, evidence: Sequence[LagEvidence]) -> float | None:
        return estimate_lag(evidence, self.min_boundaries)

    def with_lag(self, lag: float) -> DtwAligner:
        return evolve(self.inner, lag_seconds=lag)


def _starts(words: tuple[tuple[Word, ...], ...]) -> NDArray[np.float64]:
    """The interior word starts (the first word's is pinned to the window's start by DTW: it says nothing)."""
    return np.array([w.start for ws in words for w in ws][1:], dtype=np.float64)
