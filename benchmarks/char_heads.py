"""Which heads' character rows time words best, and whether the run can tell without labels (issue 23 item 2, the
fifth round; ``adapters/dtw/char_heads.py``).

Reads, for a choice set and a check set, the records of ``benchmarks.record_windows --all-heads`` and the character
rows of every head of ``benchmarks.char_forcing force``. Each rule picks the heads whose rows DTW reads (per window,
or once for a whole set); the lag is chosen on the choice set; the refinement is today's, without the edge probe:

    PYTHONPATH=. .venv/bin/python -m benchmarks.char_heads /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/chars-ljspeech_mfa-base.pkl /tmp/edges-timit_dev-base.pkl /tmp/chars-timit_dev-base.pkl

Then, per set, each candidate's label-free score (``lag.valley_agreement``: the share of the characters' interior
word starts within 20 ms of an energy valley once the lag is settled), which the product weighs the candidates by.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import evolve

from benchmarks.char_forcing import CharAligner, _load
from benchmarks.edge_heads import hypotheses, line, load_record
from onepass_whisper.adapters.dtw.char_heads import _evidence, shape_scores
from onepass_whisper.adapters.dtw.lag import valley_agreement
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import connected_boundary_errors, score_corpus
from onepass_whisper.domain.audio import CharacterRows

Rows = Any  # (rows: heads × characters × frames, firsts, spaces), as ``char_forcing force`` keeps them
Pick = Callable[[Rows], list[int]]  # a window's rows -> the indices of the heads DTW reads


def ranked(rows: Sequence[Rows], pool: Sequence[int]) -> list[int]:
    """``pool``'s heads by their shape ranks summed over ``rows`` (best first)."""
    total = np.zeros(len(pool))
    for r in rows:
        total += np.argsort(np.argsort(-shape_scores(r[0][list(pool)]), kind="stable"), kind="stable")
    return [pool[i] for i in np.argsort(total, kind="stable")]


def score_rule(name: str, sets: Sequence[tuple[Any, Any, str]], pick_for: Callable[[Any], Pick]) -> None:
    """One line: the rule's lag on the first set, its scores on each (``pick_for(forced)``: its heads per window)."""

    def aligner(record: Any, forced: Any, refine: bool, lag: float) -> Any:
        by_id = {id(c): f for c, f in zip(record["chunks"], forced, strict=True) if f is not None}
        pick = pick_for(forced)
        return _PickingAligner(by_id, pick, refine, lag)

    record, forced, _ = sets[0]
    metrics = WhisperTextMetrics()
    errors = connected_boundary_errors(record["refs"], hypotheses(record, aligner(record, forced, False, 0.0)), metrics)
    lag = float(np.median(errors)) if errors.size else 0.0
    text = [f"{name} (lag {1000 * lag:+.0f} ms)"]
    for record, forced, label in sets:
        result = score_corpus(record["refs"], hypotheses(record, aligner(record, forced, True, lag)), metrics)
        text.append(line(label, result.overall))
    print("  ".join(text), flush=True)


class _PickingAligner:
    """``CharAligner`` whose heads each window's rows pick."""

    def __init__(self, forced: Any, pick: Pick, refine: bool, lag: float) -> None:
        self.forced, self.pick, self.refine, self.lag = forced, pick, refine, lag

    def align(self, chunk: Any) -> Any:
        entry = self.forced.get(id(chunk))
        heads = tuple(self.pick(entry)) if entry is not None else (0,)
        return CharAligner(self.forced, heads, 7, self.refine, self.lag).align(chunk)


def agreement(record: Any, forced: Any, heads: Sequence[int]) -> float | None:
    """The candidate's label-free score on the set (``lag.valley_agreement``)."""
    evidence = []
    for chunk, entry in zip(record["chunks"], forced, strict=True):
        if entry is None or chunk.attention.shape[-1] == 0:
            continue
        rows, firsts, _ = entry
        char_rows = (CharacterRows(0, np.array(firsts), rows[list(heads)]),)
        evidence.append(_evidence(evolve(chunk, char_rows=char_rows)))
    return valley_agreement(evidence)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", type=Path, nargs="+", help="record, character rows, ...: the first pair chooses")
    args = parser.parse_args(argv)
    sets = [(load_record(r), _load(c), r.name) for r, c in zip(args.sets[::2], args.sets[1::2], strict=True)]
    heads = [tuple(h) for h in sets[0][0]["heads"]]
    every = list(range(len(heads)))
    alignment = [heads.index(tuple(h)) for h in sets[0][0]["alignment_heads"]]
    layers = sorted({layer for layer, _ in heads})

    def fixed(chosen: list[int]) -> Callable[[Any], Pick]:
        return lambda forced: lambda rows: chosen

    def per_window(k: int) -> Callable[[Any], Pick]:
        return lambda forced: lambda rows: ranked([rows], every)[:k]

    score_rule("alignment heads", sets, fixed(alignment))
    for layer in layers:
        score_rule(f"all heads of layer {layer}", sets, fixed([i for i in every if heads[i][0] == layer]))
    for k in (2, 3, 4):
        score_rule(f"per window, the {k} best-shaped", sets, per_window(k))
    for k in (3, 4):

        def per_set(forced: Any, k: int = k) -> Pick:
            chosen = ranked([f for f in forced if f is not None], every)[:k]
            return lambda rows: chosen

        score_rule(f"per set, the {k} best-shaped", sets, per_set)

    def union(forced: Any) -> Pick:
        chosen = sorted(set(alignment) | set(ranked([f for f in forced if f is not None], every)[:3]))
        return lambda rows: chosen

    score_rule("the alignment heads and the 3 best-shaped", sets, union)
    for record, forced, label in sets:
        shaped = ranked([f for f in forced if f is not None], every)[:3]
        scores = {
            "alignment heads": agreement(record, forced, alignment),
            "3 best-shaped": agreement(record, forced, shaped),
        }
        named = [heads[i] for i in shaped]
        print(
            f"{label}: valley agreement "
            + ", ".join(f"{n} {s:.3f}" for n, s in scores.items() if s is not None)
            + f" (best-shaped: {named})",
            flush=True,
        )


if __name__ == "__main__":
    main()
