"""Which lag a file's words get when the aligner estimates the model's lag from the speech (``LagMeasuringAligner``).

The estimate needs many word boundaries (``adapters/dtw/lag.py``): a long file holds enough, a short one does not.
The chain, for each file once its windows are measured:

1. the file's own estimate, where its windows hold enough boundaries: a file's times then depend on it alone;
2. else the run's: the evidence of every file of the run (in the order they finish), fixed once it holds
   ``settle_boundaries`` boundaries; a file that comes before that is held back until then, or until the run
   ends, when the run's evidence so far is used if it is enough;
3. else the lag kept from earlier runs of the same model (``LagStore``, written by any estimate from enough
   boundaries, the one from the most boundaries kept);
4. else none (0).

Within a run (the same inputs in the same order, the same batch size and kept lag) the times are the same each
time; a short file's times may differ between runs of different company.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TypeVar

from attrs import define, field, frozen

from onepass_whisper.application.word_timing import WordTiming, copy_outcome, timed_segments
from onepass_whisper.domain.audio import DecodedChunk, LagEvidence, Window
from onepass_whisper.domain.decoding import settle_tail, timed_at_once
from onepass_whisper.domain.model import Segment
from onepass_whisper.domain.ports import Aligner, LagMeasuringAligner, LagStore

_T = TypeVar("_T")

# heuristic: the boundaries after which a run's pooled estimate is fixed and held files go on: a few times the
# minimum an estimate needs, so that the run's lag is steadier than one long file's (docs/alignment.md), while the
# files held until then (their windows' samples and token times) stay a few MB.
SETTLE_BOUNDARIES = 1000


@define
class RunLag:
    """The lag chain of one run (or one server's life): the evidence pooled so far and the run's lag once fixed.
    Its calls may come from several threads (the server's timing pool)."""

    aligner: LagMeasuringAligner
    store: LagStore | None = None
    settle_boundaries: int = SETTLE_BOUNDARIES
    pool: list[LagEvidence] = field(factory=list)
    fixed: float | None = None  # the run's lag, once its evidence settled it
    saved: int = 0  # boundaries behind the lag this run saved last
    lock: threading.RLock = field(factory=threading.RLock)

    @property
    def boundaries(self) -> int:
        return sum(e.boundaries for e in self.pool)

    def fallback(self) -> float:
        """The lag for a window timed before its file's evidence is in: the run's if fixed, else the kept one, else
        0."""
        with self.lock:
            if self.fixed is not None:
                return self.fixed
        kept = self.store.load() if self.store is not None else None
        return 0.0 if kept is None else kept

    def of_file(self, evidence: Sequence[LagEvidence]) -> float | None:
        """A file's lag from its windows' evidence: its own, else the run's if fixed; None: hold the file until
        ``at_end`` says more. The evidence joins the run's pool until the run's lag is fixed (then the pool is let
        go: a server's life would otherwise keep every window's levels)."""
        own = self.aligner.estimate_lag(evidence)
        with self.lock:
            if own is not None:
                self._save(own, sum(e.boundaries for e in evidence))
            if self.fixed is not None:
                return own if own is not None else self.fixed
            self.pool.extend(evidence)
            if self.boundaries >= self.settle_boundaries:
                self.fixed = self.aligner.estimate_lag(self.pool)
                if self.fixed is not None:
                    self._save(self.fixed, self.boundaries)
                    self.pool = []
            return own if own is not None else self.fixed

    def at_end(self) -> float:
        """The lag of the files still held when the run ends: the run's evidence if it is enough, else the kept
        lag, else 0."""
        with self.lock:
            if self.fixed is None:
                pooled = self.aligner.estimate_lag(self.pool)
                if pooled is not None:
                    self.fixed = pooled
                    self._save(pooled, self.boundaries)
        return self.fallback()

    def timing(self, lag: float) -> Aligner:
        return self.aligner.with_lag(lag)

    def _save(self, lag: float, boundaries: int) -> None:
        if self.store is not None and boundaries > self.saved:
            self.store.save(lag, boundaries)
            self.saved = boundaries


@frozen(eq=False)
class MeasuredWindow:
    """A decoded window whose words wait for its input's lag: its first phase (``measure``: DTW), and the future
    of its segments, set once ``time_measured`` timed it. ``kept``: whether its segments are kept (a tail window
    that ``settle_tail`` judged a hallucination keeps none)."""

    offset: float
    measured: Future[tuple[DecodedChunk, LagEvidence]]
    timed: Future[list[Segment]] = field(factory=Future)
    kept: bool = True

    @property
    def evidence(self) -> LagEvidence:
        return self.measured.result()[1]


def measure_window(lag: RunLag, timing: WordTiming, chunk: DecodedChunk) -> tuple[MeasuredWindow, Window | None]:
    """The first phase of ``chunk`` (on ``timing``'s threads), and its undecoded tail. A window that
    ``timed_at_once`` chose is measured here and timed with the lag known so far, which decides its tail and
    whether its segments are kept; its words are timed again with its input's lag."""
    if not timed_at_once(chunk):
        return MeasuredWindow(chunk.window.offset, timing.measure(lag.aligner, chunk)), None
    measured = lag.aligner.measure(chunk)
    timed = timed_segments(lag.timing(lag.fallback()), measured[0], True)
    segments, rest = settle_tail(chunk, timed)
    return MeasuredWindow(chunk.window.offset, done(measured), kept=bool(segments) or not timed), rest


def time_measured(windows: Sequence[MeasuredWindow], timing: WordTiming, aligner: Aligner) -> None:
    """The second phase: each measured window timed by ``aligner`` (with its input's lag) on ``timing``'s pool,
    its ``timed`` future set when done."""
    for window in windows:
        if not window.kept:
            window.timed.set_result([])
            continue
        chunk, _evidence = window.measured.result()
        timing.submit(chunk, True, aligner).add_done_callback(functools.partial(copy_outcome, target=window.timed))


def done(value: _T) -> Future[_T]:
    """A future already holding ``value``."""
    future: Future[_T] = Future()
    future.set_result(value)
    return future
