"""The next batch's encoder on a second stream, issued a piece at a time between this batch's decoder steps.

Why pieces: on an H100 (``docs/performance.md`` #95) the whole encoder of 64 windows queued at once on a second
stream (~0.34 s of the device's time) slowed the decoding beside it by ~0.25 s: the steps' kernels waited behind
the encoder's, though a step at batch 64 is host-bound and leaves the device idle a few milliseconds a step. So the
encoder is cut into pieces (a group's spectrograms, then the backend's parts: the stem, each residual block, the
final norm; the edge probe's product) and ``advance`` issues a few of them after each decoder step
(``loop.decode_lagged``'s ``between``), spread over ``SPREAD_STEPS`` steps; what is left when the batch is taken
is issued then. ``SPREAD_STEPS`` 0 issues everything at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import mlx.core as mx
import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx.edge_probe import EdgeProbe
from onepass_whisper.domain.audio import Window

SPREAD_STEPS = 48  # decoder steps over which the pieces are spread (a 30-s window of speech decodes in ~100)


class AheadEncoding:
    """One ``encode_ahead`` call's work: its windows, the pieces still to issue on ``stream``, and once issued the
    encoder's output and edge-probe products (one per group of windows, in the windows' order)."""

    def __init__(
        self,
        windows: Sequence[Window],
        groups: Sequence[Sequence[Window]],
        mels: Callable[[Sequence[Window]], mx.array],
        encode_parts: Callable[[mx.array], Iterator[mx.array]],
        parts_per_group: int,
        probe: EdgeProbe | None,
        stream: mx.Stream,
    ) -> None:
        """``mels``: a group's spectrograms; ``encode_parts``: the encoder over them as ``parts_per_group`` arrays,
        each built on the one before, the last its output."""
        self.windows = tuple(windows)
        self.stream = stream
        self.outputs: list[mx.array] = []
        self.projected: list[mx.array] = []
        self._probe = probe
        self._work = self._pieces(groups, mels, encode_parts)
        self.done = False
        pieces = len(groups) * (1 + parts_per_group + (probe is not None))
        self.per_step = math.ceil(pieces / SPREAD_STEPS) if SPREAD_STEPS else pieces
        if not SPREAD_STEPS:
            self.finish()

    def _pieces(
        self,
        groups: Sequence[Sequence[Window]],
        mels: Callable[[Sequence[Window]], mx.array],
        encode_parts: Callable[[mx.array], Iterator[mx.array]],
    ) -> Iterator[mx.array]:
        for group in groups:
            spectrograms = mels(group)
            yield spectrograms
            output = spectrograms
            for output in encode_parts(spectrograms):
                yield output
            self.outputs.append(output)
            if self._probe is not None:
                self.projected.append(self._probe.projection(output))
                yield self.projected[-1]

    def advance(self, pieces: int | None = None) -> None:
        """Issue the next ``pieces`` (by default a step's share), each built on ``stream`` and not waited for."""
        for _ in range(self.per_step if pieces is None else pieces):
            if self.done:
                return
            with mx.stream(self.stream):  # entered per piece: the decoder's own work between stays on its stream
                piece = next(self._work, None)
                if piece is None:
                    self.done = True
                    return
                mx.async_eval(piece)  # type: ignore[no-untyped-call]

    def finish(self) -> None:
        while not self.done:
            self.advance(64)

    def take(
        self, windows: Sequence[Window], edges: dict[int, NDArray[np.float32]] | None, probe: EdgeProbe | None
    ) -> mx.array | None:
        """``windows``' encoder output, rows in their order (and their edge logits put into ``edges``), where all of
        them were started here (and their edges too, where asked for); else None. The pieces left are issued."""
        where = {id(w): i for i, w in enumerate(self.windows)}
        rows: list[int] = []
        for window in windows:
            row = where.get(id(window))
            if row is None:
                return None
            rows.append(row)
        wants_edges = edges is not None and probe is not None
        if wants_edges and self._probe is None:
            return None
        self.finish()
        if edges is not None and wants_edges:
            assert probe is not None
            projected = np.concatenate([np.array(part) for part in self.projected])  # two numbers a frame
            for window, row in zip(windows, rows):
                edges[id(window)] = probe.logits(projected[row], window.num_frames)
        features = mx.concatenate(self.outputs) if len(self.outputs) > 1 else self.outputs[0]
        return features if rows == list(range(len(self.windows))) else features[mx.array(rows)]
