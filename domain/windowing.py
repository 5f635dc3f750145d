"""Cut a long waveform into windows of at most 30 s, each ending in a pause, so that no word is cut in half.

The rule (all levels in dB of mean power, 0 dB = a full-scale square wave):

1. Measure the power of 20 ms frames, and a smoothed power: the mean over the 11 frames (220 ms) centred on each
   frame. A frame is smoothed-quiet only if its whole ±110 ms neighbourhood is, so the short closures inside a word
   ("ba_ck") never count as pauses; pauses of about 250 ms and longer do.
2. For a window starting at ``s``: if the rest of the input fits in ``max_seconds``, it is the last window.
   Otherwise look for the cut among the frames lying wholly inside the second half of the allowed span,
   ``[s + max/2, s + max]``, so that every window but the last is at least half as long as allowed.
3. The window's loudness is the 95th percentile of its frames' power over ``[s, s + max]``. A frame is quiet if its
   smoothed power is at least 30 dB below that loudness, or at or below -70 dB (digital silence and dither, however
   quiet the whole window is).
4. If some frames of the search span are quiet, take the latest one and the run of quiet frames around it (which may
   reach outside the span) and cut in the middle of that run, moved into the span where the run overhangs it.
5. Else, if the quietest frame of the span (the latest of equals) is a clear dip, 10 dB or more below the loudness
   (a breath in a noisy recording), cut in its middle.
6. Else (music, continuous noise, speech without a pause) cut blindly at ``s + max``.

The input is assumed to be finite 16 kHz mono samples (``AudioSource`` guarantees both); each window is a view into
it, not a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import pairwise
from typing import Final

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from onepass_whisper.domain.audio import FRAME_SECONDS, SAMPLE_RATE, WINDOW_SECONDS, Window

FRAME_SAMPLES: Final = round(FRAME_SECONDS * SAMPLE_RATE)  # 320 samples = 20 ms
SMOOTHING_FRAMES: Final = 11  # 220 ms, centred: longer than a stop closure, shorter than a pause between phrases
LOUDNESS_PERCENTILE: Final = 95.0  # the window's speaking level; robust to a few clicks
QUIET_BELOW_LOUDNESS_DB: Final = 30.0  # heuristic: room noise in a pause lies 30-60 dB under speech peaks
SILENCE_DB: Final = -70.0  # heuristic: quiet whatever the window's loudness (16-bit dither is about -101 dB)
DIP_BELOW_LOUDNESS_DB: Final = 10.0  # heuristic: a fallback cut needs at least this much of a dip
POWER_FLOOR: Final = 1e-12  # -120 dB, so that digital silence has a finite level


def split_into_windows(samples: NDArray[np.float32], source: int, max_seconds: float = WINDOW_SECONDS) -> list[Window]:
    """Cut ``samples`` (16 kHz mono) into consecutive windows of at most ``max_seconds``, ending in pauses.

    The windows cover the input exactly, in order, without gaps or overlap; ``offset`` is each window's start in
    seconds and ``index`` its position. Empty input gives no windows.
    """
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (samples,), got {samples.shape}")
    limit = _max_samples(max_seconds)
    bounds = _cut_points(samples, limit)
    return [
        Window(source=source, index=index, offset=start / SAMPLE_RATE, samples=samples[start:end])
        for index, (start, end) in enumerate(pairwise(bounds))
    ]


def stream_windows(
    blocks: Iterable[NDArray[np.float32]], source: int, max_seconds: float = WINDOW_SECONDS
) -> Iterator[Window]:
    """The windows of ``split_into_windows`` over the concatenation of ``blocks``, cut as the blocks arrive.

    The same windows, each a copy, while only about two windows' worth of samples (plus a block) is ever held: the
    rule for a window starting at ``s`` reads the levels of ``[s, s + 2 * max_seconds]`` and a few frames around,
    so that much lookahead gives the same cuts as the whole input would. Blocks must be finite 16 kHz mono.
    """
    limit = _max_samples(max_seconds)
    margin = (SMOOTHING_FRAMES + 2) * FRAME_SAMPLES  # the smoothing's reach, and a frame of rounding
    buffer = np.zeros(0, np.float32)
    base = 0  # the input's sample index of buffer[0]: a multiple of FRAME_SAMPLES, so frames fall as on the whole
    start = index = 0  # the next window's first sample and position
    pending: list[NDArray[np.float32]] = []
    exhausted = False
    iterator = iter(blocks)
    while True:
        held = len(buffer) + sum(len(b) for b in pending)
        while not exhausted and base + held - start < 2 * limit + margin:
            try:
                block = next(iterator)
            except StopIteration:
                exhausted = True
                break
            pending.append(np.asarray(block, dtype=np.float32).reshape(-1))
            held += len(pending[-1])
        if pending:
            buffer = np.concatenate([buffer, *pending])
            pending = []
        rest = base + len(buffer) - start
        if rest <= 0:
            return
        if exhausted and rest <= limit:
            yield Window(source=source, index=index, offset=start / SAMPLE_RATE, samples=buffer[start - base :].copy())
            return
        levels = _Levels.of(buffer)
        cut = base + levels.next_cut(start - base, limit)
        yield Window(
            source=source, index=index, offset=start / SAMPLE_RATE, samples=buffer[start - base : cut - base].copy()
        )
        index, start = index + 1, cut
        drop = max(0, (start - base - margin) // FRAME_SAMPLES * FRAME_SAMPLES)  # keep the smoothing's left reach
        if drop:
            buffer, base = buffer[drop:].copy(), base + drop


def sound_end(samples: NDArray[np.float32]) -> float:
    """Seconds from the start of ``samples`` (16 kHz mono) to the end of the last frame that is not quiet by step
    3's rule, with the samples' own loudness; 0.0 when all are quiet (digital silence, dither) or none are given.

    The smoothed power is used, as for cuts: a frame within 110 ms of sound counts as sound.
    """
    loud = np.flatnonzero(sound_frames(samples))
    if not loud.size:
        return 0.0
    return min((int(loud[-1]) + 1) * FRAME_SAMPLES, len(samples)) / SAMPLE_RATE


def sound_frames(samples: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Per 20 ms frame of ``samples`` (16 kHz mono), whether it is sound: not quiet by step 3's rule, with the
    samples' own loudness, on the smoothed power (a frame within 110 ms of sound counts as sound); (frames,)."""
    if samples.size == 0:
        return np.zeros(0, np.bool_)
    levels = _Levels.of(samples)
    _, threshold = _quiet_threshold(levels.frame_db)
    sound: NDArray[np.bool_] = levels.smoothed_db > threshold
    return sound


def _max_samples(max_seconds: float) -> int:
    """The most samples whose duration is ``<= max_seconds``."""
    if not (np.isfinite(max_seconds) and max_seconds * SAMPLE_RATE >= 1):
        raise ValueError(f"max_seconds must be finite and at least one sample long, got {max_seconds}")
    limit = int(max_seconds * SAMPLE_RATE)
    while limit / SAMPLE_RATE > max_seconds:  # the product may have been rounded up
        limit -= 1
    return limit


def _cut_points(samples: NDArray[np.float32], limit: int) -> list[int]:
    """Window boundaries in samples: ``[0, cut, ..., len(samples)]``, or ``[]`` for empty input."""
    total = len(samples)
    if total == 0:
        return []
    if total <= limit:
        return [0, total]
    levels = _Levels.of(samples)
    bounds = [0]
    while total - bounds[-1] > limit:
        bounds.append(levels.next_cut(bounds[-1], limit))
    bounds.append(total)
    return bounds


@frozen(eq=False)
class _Levels:
    """Frame levels of one input, and the choice of each cut (steps 2-6 of the module's rule)."""

    frame_db: NDArray[np.float64]  # (frames,)
    smoothed_db: NDArray[np.float64]  # (frames,)

    @classmethod
    def of(cls, samples: NDArray[np.float32]) -> _Levels:
        """The levels of ``samples``' 20 ms frames (step 1)."""
        power = _frame_power(samples)
        return cls(frame_db=_decibels(power), smoothed_db=_decibels(_centred_mean(power, SMOOTHING_FRAMES)))

    def next_cut(self, start: int, limit: int) -> int:
        """Where the window that starts at sample ``start`` ends; ``start < cut <= start + limit``."""
        end = start + limit
        first = -(-(start + max(1, limit // 2)) // FRAME_SAMPLES)  # first frame starting in the search span
        stop = end // FRAME_SAMPLES  # frames before this one end inside the span
        if first >= stop:
            return end  # the span holds no whole frame: a window shorter than about 40 ms
        window_db = self.frame_db[start // FRAME_SAMPLES : -(-end // FRAME_SAMPLES)]
        loudness, threshold = _quiet_threshold(window_db)
        quiet = np.flatnonzero(self.smoothed_db[first:stop] <= threshold)
        if quiet.size:
            run_first, run_last = self._quiet_run(first + int(quiet[-1]), threshold, start, limit)
            middle = (run_first + run_last + 1) * FRAME_SAMPLES // 2
            return min(max(middle, first * FRAME_SAMPLES), stop * FRAME_SAMPLES)
        span = self.smoothed_db[first:stop]
        quietest = stop - 1 - int(np.argmin(span[::-1]))  # the latest of equal minima
        if self.smoothed_db[quietest] <= loudness - DIP_BELOW_LOUDNESS_DB:
            return quietest * FRAME_SAMPLES + FRAME_SAMPLES // 2
        return end

    def _quiet_run(self, frame: int, threshold: float, start: int, limit: int) -> tuple[int, int]:
        """First and last frame of the run of quiet frames through ``frame``, within one window's reach of it."""
        before = self.smoothed_db[start // FRAME_SAMPLES : frame + 1] > threshold
        after = self.smoothed_db[frame : frame + limit // FRAME_SAMPLES + 1] > threshold
        loud_before, loud_after = np.flatnonzero(before), np.flatnonzero(after)
        run_first = start // FRAME_SAMPLES + (int(loud_before[-1]) + 1 if loud_before.size else 0)
        run_last = frame + (int(loud_after[0]) - 1 if loud_after.size else len(after) - 1)
        return run_first, run_last


def _quiet_threshold(frame_db: NDArray[np.float64]) -> tuple[float, float]:
    """Step 3: the loudness of frames ``frame_db`` and the smoothed level at or below which a frame is quiet."""
    loudness = float(np.percentile(frame_db, LOUDNESS_PERCENTILE))
    return loudness, max(loudness - QUIET_BELOW_LOUDNESS_DB, SILENCE_DB)


def _frame_power(samples: NDArray[np.float32]) -> NDArray[np.float64]:
    """Mean power of each 20 ms frame, the last one possibly shorter; (frames,)."""
    whole = len(samples) // FRAME_SAMPLES
    body = samples[: whole * FRAME_SAMPLES].reshape(whole, FRAME_SAMPLES)  # frames × samples, a view
    sums = np.einsum("ij,ij->i", body, body).astype(np.float64)  # float32 products: 4x faster than float64
    tail = samples[whole * FRAME_SAMPLES :].astype(np.float64)
    if tail.size:
        sums = np.append(sums, tail @ tail * (FRAME_SAMPLES / tail.size))
    power: NDArray[np.float64] = sums / FRAME_SAMPLES
    loudest = float(np.finfo(np.float64).max)
    return np.nan_to_num(power, nan=loudest, posinf=loudest)  # overflow counts as loud


def _centred_mean(values: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    """Mean over the ``width`` values centred on each one, over fewer at the ends; same shape."""
    half = width // 2
    kernel = np.ones(width)
    sums = np.convolve(values, kernel)[half : half + len(values)]
    counts = np.convolve(np.ones_like(values), kernel)[half : half + len(values)]
    mean: NDArray[np.float64] = sums / counts
    return mean


def _decibels(power: NDArray[np.float64]) -> NDArray[np.float64]:
    level: NDArray[np.float64] = 10.0 * np.log10(np.maximum(power, POWER_FLOOR))
    return level
