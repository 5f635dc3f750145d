"""The next batch's encoder on a second stream, queued while this batch decodes (``MlxWhisperDecoder.encode_ahead``).

A decoder step at batch 64 on a GPU is host-bound: the device has gaps between the step's kernels while the host
builds the next. The next batch's spectrograms, encoder and edge-probe product queued on a stream of their own
(``Backend.side_stream``) run in and beside those gaps, and the host's share of the spectrograms moves off the
next batch's path (``docs/performance.md`` #95). Issuing the encoder a block at a time between the decoder's steps
instead of all at once was measured too, and gained nothing (#96): its kernels slow the steps beside them either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx.edge_probe import EdgeProbe
from onepass_whisper.domain.audio import Window


class AheadEncoding:
    """One ``encode_ahead`` call: its windows, and their encoder output and edge-probe products (one per group of
    windows, in the windows' order), queued on ``stream`` when made and never waited for here."""

    def __init__(
        self,
        windows: Sequence[Window],
        groups: Sequence[Sequence[Window]],
        mels: Callable[[Sequence[Window]], mx.array],
        encode: Callable[[mx.array], mx.array],
        probe: EdgeProbe | None,
        stream: mx.Stream,
    ) -> None:
        """``mels``: a group's spectrograms; ``encode``: the backend's encoder, unevaluated."""
        self.windows = tuple(windows)
        outputs, projected = [], []
        with mx.stream(stream):
            for group in groups:
                outputs.append(encode(mels(group)))
                if probe is not None:
                    projected.append(probe.projection(outputs[-1]))
            self.features = mx.concatenate(outputs) if len(outputs) > 1 else outputs[0]
            self.projected: mx.array | None = None
            if projected:
                self.projected = mx.concatenate(projected) if len(projected) > 1 else projected[0]
            mx.async_eval(self.features, *projected)  # type: ignore[no-untyped-call]

    def take(
        self, windows: Sequence[Window], edges: dict[int, NDArray[np.float32]] | None, probe: EdgeProbe | None
    ) -> mx.array | None:
        """``windows``' encoder output, rows in their order (and their edge logits put into ``edges``), where all of
        them were started here (and their edges too, where asked for); else None."""
        where = {id(w): i for i, w in enumerate(self.windows)}
        rows: list[int] = []
        for window in windows:
            row = where.get(id(window))
            if row is None:
                return None
            rows.append(row)
        if edges is not None and probe is not None:
            if self.projected is None:
                return None
            projected = np.array(self.projected)  # two numbers a frame
            for window, row in zip(windows, rows):
                edges[id(window)] = probe.logits(projected[row], window.num_frames)
        if rows == list(range(len(self.windows))):
            return self.features
        return self.features[mx.array(rows)]
