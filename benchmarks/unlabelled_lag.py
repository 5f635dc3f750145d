"""Experiments, not used by the aligner: a model's lag estimated from audio alone, with no labels.

The lag that ``DtwAligner`` takes off DTW's times is a property of a model's heads (``adapters/dtw/lag.py``). The idea tried here (issue 23, item 1): where a
window's speech is loud some token attends strongly, where it pauses none does, so the heads' activity (per
attention frame, the mean of the two strongest z-scored rows after the median filter, as DTW sees them) should be
the window's loudness (10-ms levels in dB, averaged to attention frames, scaled from its background to its loud
level) shifted by the lag. ``lag_curve`` correlates the two at every shift within ``MAX_LAG_SECONDS``; ``lag_of``
sums the curves of many windows and takes the best shift, refined between frames by a parabola through the peak.

Why it is not the default (``docs/alignment.md``): on timit_dev (base) it finds -57 ms against the labelled -54 ms,
but on ljspeech_mfa -200 ms (the end of its range) against the labelled -80 ms: there the activity hardly follows
the loudness at any shift, and on timit_dev most of the fit comes from the first token's row over the leading
silence (without that row the best shift is +141 ms). One 3-s window's best shift spreads over 80-100 ms.

The second estimate, DTW's word starts against energy valleys, is the one the aligner uses: it moved to
``adapters/dtw/lag.py``; ``benchmarks/calibrate_lag.py`` prints both beside the labelled lag.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.refine import BACKGROUND_PERCENTILE, HOP_SECONDS, frame_levels, has_contrast
from onepass_whisper.domain.audio import SAMPLE_RATE

# heuristic: the largest lag looked for. The built-in models' labelled lags are +90 ms (tiny.en) and -80 ms (base);
# beyond a fifth of a second the attention would sit on the neighbouring syllable and the shift no longer means lag.
MAX_LAG_SECONDS = 0.2
# heuristic: the activity of a frame is the mean of its strongest rows. The single strongest follows the first token's
# row, which DTW pins to the window's start and which spreads over the leading silence; two settle faster (over
# timit_dev's windows with base, the middle half of one window's estimates: 100 ms wide with one row, 80 with two).
ACTIVE_ROWS = 2


def lag_curve(
    matrix: NDArray[np.floating], samples: NDArray[np.floating], frame_seconds: float
) -> NDArray[np.float64] | None:
    """Correlation of the heads' activity with the window's loudness at each shift of ``shifts(frame_seconds)``.

    ``matrix``: text rows × frames, as ``attention_matrix`` gives it (end-of-text's row left out). None where the
    window has no contrast (no pause to tell), too few rows or frames.
    """
    levels = frame_levels(samples, SAMPLE_RATE)
    hops = max(1, round(frame_seconds / HOP_SECONDS))  # 10-ms levels per attention frame
    frames = min(matrix.shape[1], len(levels) // hops)
    reach = round(MAX_LAG_SECONDS / frame_seconds)
    if matrix.shape[0] < ACTIVE_ROWS or frames < 4 * reach or not has_contrast(levels):
        return None
    background, loud = np.percentile(levels, [BACKGROUND_PERCENTILE, 100.0 - BACKGROUND_PERCENTILE])
    loudness = levels[: frames * hops].reshape(frames, hops).mean(axis=1)
    loudness = np.clip((loudness - background) / (loud - background), 0.0, 1.0)
    activity = np.sort(np.asarray(matrix[:, :frames], dtype=np.float64), axis=0)[-ACTIVE_ROWS:].mean(axis=0)
    curve = np.empty(2 * reach + 1, dtype=np.float64)
    for i, shift in enumerate(range(-reach, reach + 1)):  # activity(t) against loudness(t - shift)
        a, v = (activity[shift:], loudness[: frames - shift]) if shift >= 0 else (activity[:shift], loudness[-shift:])
        curve[i] = _correlation(a, v)
    return curve


def lag_of(curves: Iterable[NDArray[np.float64] | None], frame_seconds: float) -> float | None:
    """The lag in seconds (positive: the attention comes late) that best fits the summed curves; None without any."""
    kept = [c for c in curves if c is not None]
    if not kept:
        return None
    total = np.sum(kept, axis=0)
    peak = int(np.argmax(total))
    offset = 0.0
    if 0 < peak < len(total) - 1:  # a parabola through the peak and its neighbours: between frames
        left, centre, right = total[peak - 1 : peak + 2]
        denominator = left - 2.0 * centre + right
        offset = 0.5 * (left - right) / denominator if denominator < 0.0 else 0.0
    reach = (len(total) - 1) // 2
    return float((peak - reach + offset) * frame_seconds)


def _correlation(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Pearson's correlation; 0 where either side is constant."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / norm) if norm > 0.0 else 0.0
