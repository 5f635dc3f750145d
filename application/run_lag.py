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

from collections.abc import Sequence

from attrs import define, field

from onepass_whisper.domain.audio import LagEvidence
from onepass_whisper.domain.ports import Aligner, LagMeasuringAligner, LagStore

# heuristic: the boundaries after which a run's pooled estimate is fixed and held files go on: a few times the
# minimum an estimate needs, so that the run's lag is steadier than one long file's (docs/alignment.md), while the
# files held until then (their windows' samples and token times) stay a few MB.
SETTLE_BOUNDARIES = 1000


@define
class RunLag:
    """The lag chain of one run (or one server's life): the evidence pooled so far and the run's lag once fixed."""

    aligner: LagMeasuringAligner
    store: LagStore | None = None
    settle_boundaries: int = SETTLE_BOUNDARIES
    pool: list[LagEvidence] = field(factory=list)
    fixed: float | None = None  # the run's lag, once its evidence settled it
    saved: int = 0  # boundaries behind the lag this run saved last

    @property
    def boundaries(self) -> int:
        return sum(e.boundaries for e in self.pool)

    def fallback(self) -> float:
        """The lag for a window timed before its file's evidence is in: the run's if fixed, else the kept one, else
        0."""
        if self.fixed is not None:
            return self.fixed
        kept = self.store.load() if self.store is not None else None
        return 0.0 if kept is None else kept

    def of_file(self, evidence: Sequence[LagEvidence]) -> float | None:
        """A file's lag from its windows' evidence: its own, else the run's if fixed; None: hold the file until
        ``release`` says more. The evidence joins the run's pool either way."""
        own = self.aligner.estimate_lag(evidence)
        if own is not None:
            self._save(own, sum(e.boundaries for e in evidence))
        self.pool.extend(evidence)
        if self.fixed is None and self.boundaries >= self.settle_boundaries:
            self.fixed = self.aligner.estimate_lag(self.pool)
            if self.fixed is not None:
                self._save(self.fixed, self.boundaries)
        return own if own is not None else self.fixed

    def at_end(self) -> float:
        """The lag of the files still held when the run ends: the run's evidence if it is enough, else the kept
        lag, else 0."""
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
