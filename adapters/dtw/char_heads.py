"""Which heads' rows time the characters (``--char-timing``): chosen per model from the run's own windows, no table.

A model's alignment heads were picked (by openai-whisper, for its models) to follow word pieces. Some models' follow
characters as well (base's); others' barely do (tiny.en's drift by seconds over long windows, and its characters'
timing was worse than its word pieces'). Two candidates are weighed, without labels:

- the alignment heads;
- the *shape heads*: the ``SHAPE_HEADS`` heads, of every layer, whose character maps look most like an alignment
  (Yeh, Meng, Tang 2025: a median filter of 3 along frames, a softmax over frames, then the sum of the frames' norms
  over rows plus the rows' norms over frames: high for a sharp, monotone map), ranked per run and the ranks summed
  over the runs of the first batch that has them. The choice is a property of the model: on ljspeech_mfa and
  timit_dev the same three heads came first for each model (``docs/alignment.md``).

Each candidate's DTW over the characters gives the words' interior starts; the share of them that sit on an energy
valley once the lag is settled (``lag.valley_agreement``) is its score, and the higher wins (ties: the alignment
heads). The choice is kept in the model cache (``HeadStore``; ``lag_store.JsonHeadStore``) and later runs take it
as it is: short runs could not make it, and the character rows' kept lag belongs to the heads it was measured on.
Offline, the score picked the better candidate for both models on both labelled sets (``docs/alignment.md``, item 2's
fifth round): tiny.en the shape heads, base its alignment heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from attrs import evolve
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.aligner import char_token_frames
from onepass_whisper.adapters.dtw.filters import median_filter
from onepass_whisper.adapters.dtw.lag import valley_agreement, window_evidence
from onepass_whisper.domain.audio import DecodedChunk, LagEvidence

Head = tuple[int, int]  # (layer, head)

SHAPE_HEADS = 3  # heuristic: of 2, 3, 4, 6 and 8 heads, 3 timed tiny.en's characters best on ljspeech_mfa (the choice)
# the rows of a run whose map's shape ranks the heads: every head's rows of a run are held at once, so not all of
# them (a sharp head is sharp from the first characters on)
SHAPE_ROWS = 128
# heuristic: the interior word starts each candidate needs before the choice is made; fewer, and the batch's windows
# are timed with the alignment heads while the evidence gathers. The two candidates' shares differed by 0.14-0.15
# on each model (about three standard errors at 100 starts).
CHOICE_BOUNDARIES = 100


class HeadStore(Protocol):
    """Where a model's choice is kept between runs."""

    def load(self) -> list[Head] | None: ...

    def save(self, heads: list[Head]) -> None: ...


def shape_scores(attention: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per head (heads × rows × frames raw QK), how much its map looks like an alignment: median of 3 along frames,
    softmax over frames, then the sum over frames of each frame's norm over rows plus the sum over rows of each
    row's norm over frames."""
    if attention.shape[-1] == 0 or attention.shape[-2] == 0:
        return np.zeros(attention.shape[0])
    weights = median_filter(np.asarray(attention, np.float32), 3)
    weights -= weights.max(axis=-1, keepdims=True)
    np.exp(weights, out=weights)
    weights /= weights.sum(axis=-1, keepdims=True)
    columns = np.linalg.norm(weights, axis=-2).sum(axis=-1)
    rows = np.linalg.norm(weights, axis=-1).sum(axis=-1)
    return np.asarray(columns + rows, dtype=np.float64)


class CharHeadChoice:
    """The choice for one model, made once: the heads a batch's character pass captures (``capture``), the shape
    heads ranked from a sample of its rows (``rank_shapes``), and the choice made from the timed windows
    (``weigh``), which then keep only the chosen heads' rows."""

    def __init__(self, alignment_heads: Sequence[Head], pool: Sequence[Head], store: HeadStore | None = None) -> None:
        """``pool``: every head the shape heads may come from (all layers' heads); ``store``: where the choice is
        kept (one kept there is taken if the pool holds its heads)."""
        self.alignment_heads = [(int(layer), int(head)) for layer, head in alignment_heads]
        self.pool = [(int(layer), int(head)) for layer, head in pool]
        self.store = store
        self.shape_heads: list[Head] | None = None
        kept = store.load() if store is not None else None
        self.chosen: list[Head] | None = kept if kept and all(h in self.pool for h in kept) else None
        self._evidence: tuple[list[LagEvidence], list[LagEvidence]] = ([], [])

    @property
    def capture(self) -> list[Head]:
        """The heads whose rows the character pass keeps: the chosen ones, or until then both candidates (the
        alignment heads first)."""
        if self.chosen is not None:
            return self.chosen
        extra = [h for h in self.shape_heads or [] if h not in self.alignment_heads]
        return [*self.alignment_heads, *extra]

    def rank_shapes(self, samples: Sequence[NDArray[np.floating]]) -> None:
        """The shape heads from ``samples`` (per run, ``pool`` × rows × frames raw QK): each run's heads ranked by
        ``shape_scores``, the ranks summed, the ``SHAPE_HEADS`` best (ties: the pool's order)."""
        ranks = np.zeros(len(self.pool))
        for sample in samples:
            ranks += np.argsort(np.argsort(-shape_scores(sample), kind="stable"), kind="stable")
        if samples:
            self.shape_heads = [self.pool[i] for i in np.argsort(ranks, kind="stable")[:SHAPE_HEADS]]

    def weigh(self, chunks: Sequence[DecodedChunk]) -> list[DecodedChunk]:
        """``chunks`` (their ``char_rows`` over ``capture``'s heads) with the rows of the heads that time them: the
        chosen ones; until the choice, each candidate's evidence from them is added, the choice made once both have
        ``CHOICE_BOUNDARIES`` starts, and the alignment heads' rows kept where it is not made yet."""
        if self.chosen is not None or self.shape_heads is None:
            return list(chunks)
        captured = self.capture
        candidates = [
            [captured.index(h) for h in self.alignment_heads],
            [captured.index(h) for h in self.shape_heads],
        ]
        for chunk in chunks:
            if chunk.char_rows is None or not chunk.segments:
                continue
            for kept, heads in zip(self._evidence, candidates):
                kept.append(_evidence(_with_heads(chunk, heads)))
        if min(sum(e.boundaries for e in kept) for kept in self._evidence) >= CHOICE_BOUNDARIES:
            scores = [valley_agreement(kept) for kept in self._evidence]
            better = scores[1] is not None and (scores[0] is None or scores[1] > scores[0])
            self.chosen = self.shape_heads if better else self.alignment_heads
            self._evidence = ([], [])
            if self.store is not None:
                self.store.save(self.chosen)
        heads = [captured.index(h) for h in (self.chosen or self.alignment_heads)]
        return [_with_heads(c, heads) if c.char_rows is not None else c for c in chunks]


def _with_heads(chunk: DecodedChunk, heads: Sequence[int]) -> DecodedChunk:
    """``chunk`` with its character rows cut to ``heads`` (indices on their heads' axis)."""
    rows = tuple(evolve(run, attention=run.attention[list(heads)]) for run in chunk.char_rows or ())
    return evolve(chunk, char_rows=rows)


def _evidence(chunk: DecodedChunk) -> LagEvidence:
    """The window's interior word starts by DTW over its character rows (no lag taken off), with its levels."""
    frames = char_token_frames(chunk, guard=False)  # the guard would mend the very drift weighed here
    counts = np.array([c for s in chunk.segments for c in s.word_token_counts], dtype=np.intp)
    firsts = np.concatenate(([0], np.cumsum(counts)))[:-1]
    starts = frames[firsts][1:].astype(np.float64) * chunk.frame_seconds
    return window_evidence(starts, chunk.window.samples)
