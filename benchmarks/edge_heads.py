"""Which cross-attention heads time words best: head-selection rules measured offline (issue 23 item 2).

Reads windows recorded with every head of every decoder layer (``benchmarks.record_windows --all-heads``: the rows
the single-pass decoder captures when told to capture those heads; the decoding, and so the words, are the default's),
builds each rule's rows × frames matrix, runs DTW, then the aligner's heuristics and refinement
(``DtwAligner(refine=True, lag_seconds=...)`` given the token frames), and scores with ``app eval``'s
``score_corpus``. A rule's lag is chosen on the first (choice) set, as ``benchmarks.calibrate_lag`` measures it: the median signed
error of DTW's edges (refinement off) where reference words meet without a pause; the other sets only check.

    PYTHONPATH=. .venv/bin/python -m benchmarks.edge_heads /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/edges-timit_dev-base.pkl --rules default,topk10,all

``--per-head`` prints every head's own scores on the choice set (its DTW alone, its own lag).
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from attrs import evolve, frozen
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.aligner import DtwAligner, _zscores
from onepass_whisper.adapters.dtw.filters import median_filter
from onepass_whisper.adapters.dtw.path import dtw_path
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import (
    Hypothesis,
    Metrics,
    connected_boundary_errors,
    score_corpus,
)
from onepass_whisper.application.word_timing import timed_segments
from onepass_whisper.domain.audio import DecodedChunk
from onepass_whisper.domain.language import transcript_of

Matrix = NDArray[np.float32]
# a rule: (window's attention, heads × rows × frames; its heads' (layer, head); the record) -> rows × frames
Rule = Callable[[NDArray[np.float32], Sequence[tuple[int, int]], Mapping[str, Any]], Matrix]


def zscored(attention: NDArray[np.floating], width: int = 7) -> NDArray[np.float32]:
    """Each head as whisper normalises it: softmax over frames, z-score over rows, median filter along time."""
    return np.stack([median_filter(_zscores(a), width) for a in attention]).astype(np.float32)


def softmaxed(attention: NDArray[np.floating], width: int = 3) -> NDArray[np.float32]:
    """Each head as Yeh, Meng, Tang (2025) read it: median filter of the raw scores along time, then softmax."""
    filtered = np.stack([median_filter(np.asarray(a, np.float32), width) for a in attention])
    filtered -= filtered.max(axis=-1, keepdims=True)
    weights = np.exp(filtered)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights.astype(np.float32)


def shape_scores(weights: NDArray[np.float32]) -> NDArray[np.float64]:
    """Per head, the paper's score of its map's shape: the sum of its frames' norms (over rows) plus the sum of its
    rows' norms (over frames); a sharp, monotone head scores high."""
    columns = np.linalg.norm(weights, axis=-2).sum(axis=-1)
    rows = np.linalg.norm(weights, axis=-1).sum(axis=-1)
    return np.asarray(columns + rows, dtype=np.float64)


def row_entropy(weights: NDArray[np.float32]) -> NDArray[np.float64]:
    """Per head, the mean entropy of its rows (nats): low is sharp."""
    return np.asarray(-(weights * np.log(weights + 1e-12)).sum(axis=-1).mean(axis=-1), dtype=np.float64)


def shifted(matrix: NDArray[np.float32], frames: int) -> NDArray[np.float32]:
    """``matrix`` (rows × frames) read ``frames`` later (a head late by that many frames), edges repeated."""
    if frames == 0 or matrix.shape[-1] == 0:
        return matrix
    index = np.clip(np.arange(matrix.shape[-1]) + frames, 0, matrix.shape[-1] - 1)
    return matrix[..., index]


def _select(heads: Sequence[tuple[int, int]], chosen: Sequence[tuple[int, int]]) -> list[int]:
    return [list(heads).index(tuple(h)) for h in chosen]  # type: ignore[arg-type]


def rule_default(attention: NDArray[np.float32], heads: Sequence[tuple[int, int]], record: Mapping[str, Any]) -> Matrix:
    """Today's: the model's alignment heads, whisper's normalisation, mean."""
    return np.asarray(zscored(attention[_select(heads, record["alignment_heads"])]).mean(axis=0), np.float32)


def rule_heads(
    chosen: Sequence[tuple[int, int]], width: int = 7, lags: Mapping[tuple[int, int], int] | None = None
) -> Rule:
    """A fixed list of heads, whisper's normalisation, mean; ``lags``: each head's lag in frames, taken off first."""

    def rule(attention: NDArray[np.float32], heads: Sequence[tuple[int, int]], record: Mapping[str, Any]) -> Matrix:
        z = zscored(attention[_select(heads, chosen)], width)
        if lags:
            z = np.stack([shifted(m, lags.get(tuple(h), 0)) for m, h in zip(z, chosen, strict=True)])  # type: ignore[arg-type]
        return np.asarray(z.mean(axis=0), np.float32)

    return rule


def rule_topk(k: int, combine: str = "z", layers: str = "all", width: int = 3) -> Rule:
    """Per window, the ``k`` heads of the highest shape score (Yeh, Meng, Tang 2025), combined as whisper does
    (``combine="z"``) or as the paper does (``"col"``: each map over its frames' norms, mean)."""

    def rule(attention: NDArray[np.float32], heads: Sequence[tuple[int, int]], record: Mapping[str, Any]) -> Matrix:
        n_layers = 1 + max(layer for layer, _ in heads)
        keep = [i for i, (layer, _) in enumerate(heads) if layers == "all" or layer >= n_layers // 2]
        weights = softmaxed(attention[keep], width)
        top = np.argsort(shape_scores(weights))[-k:]
        if combine == "col":
            chosen = weights[top]
            chosen = chosen / (np.linalg.norm(chosen, axis=-2, keepdims=True) + 1e-12)
            return np.asarray(chosen.mean(axis=0), np.float32)
        return np.asarray(zscored(attention[[keep[i] for i in top]], width).mean(axis=0), np.float32)

    return rule


def rule_weighted(power: float, width: int = 7) -> Rule:
    """Every head, whisper's normalisation, weighted by (1 - entropy / log(frames)) ** power: sharp heads count."""

    def rule(attention: NDArray[np.float32], heads: Sequence[tuple[int, int]], record: Mapping[str, Any]) -> Matrix:
        frames = attention.shape[-1]
        sharp = 1.0 - row_entropy(softmaxed(attention, 1)) / np.log(max(frames, 2))
        w = np.clip(sharp, 0.0, None) ** power
        z = zscored(attention, width)
        return np.tensordot(w / w.sum(), z, axes=1).astype(np.float32)

    return rule


@frozen
class RuleAligner:
    """``DtwAligner`` on a rule's matrix: DTW's token frames handed to it (as a GPU decoder's are)."""

    rule: Rule
    heads: tuple[tuple[int, int], ...]
    record: Mapping[str, Any]
    refine: bool
    lag: float

    def align(self, chunk: DecodedChunk) -> Any:
        aligner = DtwAligner(refine=self.refine, lag_seconds=self.lag)
        if not chunk.segments or chunk.attention.shape[-1] == 0:
            return aligner.align(chunk)
        matrix = self.rule(chunk.attention, self.heads, self.record)
        path_rows, path_frames = dtw_path(-matrix)
        first_visit = np.diff(path_rows, prepend=-1).astype(bool)
        frames = path_frames[first_visit].astype(np.int32)
        return aligner.align(evolve(chunk, token_frames=frames))


def load_record(path: Path) -> Any:
    """A pickle of ``benchmarks.record_windows``; chunks written before a field of ``DecodedChunk`` was added get its
    default (a slotted class's pickle leaves a later field unset)."""
    with path.open("rb") as f:
        record = pickle.load(f)
    if isinstance(record, dict):
        for chunk in record.get("chunks", []):
            for a in attrs.fields(DecodedChunk):
                if not hasattr(chunk, a.name) and a.default is not attrs.NOTHING:
                    object.__setattr__(chunk, a.name, a.default)
    return record


def hypotheses(record: Mapping[str, Any], aligner: Any) -> dict[str, Hypothesis]:
    """Each file's hypothesis from its recorded windows, as ``app eval`` makes it."""
    by_file: dict[int, list[DecodedChunk]] = {}
    for chunk in record["chunks"]:
        by_file.setdefault(chunk.window.source, []).append(chunk)
    result = {}
    for source, chunks in by_file.items():
        segments = [s for c in sorted(chunks, key=lambda c: c.window.offset) for s in timed_segments(aligner, c, True)]
        duration = max(c.window.end for c in chunks)
        transcript = transcript_of(segments, duration, model="x", fallback_language="en", english_only=True)
        result[record["refs"][source].name] = Hypothesis.from_transcript(transcript)
    return result


def score(record: Mapping[str, Any], rule: Rule, lag: float, refine: bool = True) -> Metrics:
    aligner = RuleAligner(rule, tuple(map(tuple, record["heads"])), record, refine, lag)
    return score_corpus(record["refs"], hypotheses(record, aligner), WhisperTextMetrics()).overall


def labelled_lag(record: Mapping[str, Any], rule: Rule) -> float:
    """The rule's lag as ``benchmarks.calibrate_lag`` measures it: median error of DTW's connected edges, refinement off."""
    aligner = RuleAligner(rule, tuple(map(tuple, record["heads"])), record, False, 0.0)
    errors = connected_boundary_errors(record["refs"], hypotheses(record, aligner), WhisperTextMetrics())
    return float(np.median(errors)) if errors.size else 0.0


def unlabelled_lag(record: Mapping[str, Any], rule: Rule) -> float:
    """The rule's lag on ``record`` without labels: DTW's interior word starts against energy valleys
    (``adapters.dtw.lag.estimate_lag``, the product's estimate), one estimate for the whole set."""
    from onepass_whisper.adapters.dtw.lag import estimate_lag, window_evidence

    aligner = RuleAligner(rule, tuple(map(tuple, record["heads"])), record, False, 0.0)
    evidence = []
    for chunk in record["chunks"]:
        words = [w for segment in aligner.align(chunk) for w in segment] if chunk.segments else []
        starts = np.array([w.start for w in words][1:], dtype=np.float64)
        evidence.append(window_evidence(starts, chunk.window.samples))
    lag = estimate_lag(evidence, min_boundaries=1)
    return 0.0 if lag is None else lag


def line(name: str, metrics: Metrics) -> str:
    return f"{name}: {metrics.start_mae_ms:.0f} / {metrics.end_mae_ms:.0f} ms, F1@50 {metrics.f1_50:.3f}"


def per_head(record: Mapping[str, Any]) -> list[tuple[float, tuple[int, int], float, Metrics]]:
    """Every head alone: its lag and refined scores on ``record`` (F1@50 first, for sorting)."""
    rows = []
    for head in record["heads"]:
        rule = rule_heads([tuple(head)])
        lag = labelled_lag(record, rule)
        metrics = score(record, rule, lag)
        rows.append((metrics.f1_50, tuple(head), lag, metrics))
        print(f"  head {tuple(head)} lag {1000 * lag:+.0f} ms  {line('', metrics)}", flush=True)
    return sorted(rows, reverse=True)


def named_rules(record: Mapping[str, Any], names: Sequence[str]) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for name in names:
        if name == "default":
            rules[name] = rule_default
        elif name.startswith("topk"):  # topk10, topk10col, topk10half
            body = name[4:]
            combine = "col" if body.endswith("col") else "z"
            layers = "half" if body.endswith("half") else "all"
            rules[name] = rule_topk(int(body.removesuffix("col").removesuffix("half")), combine, layers)
        elif name.startswith("weighted"):  # weighted2
            rules[name] = rule_weighted(float(name[8:]))
        elif name.startswith("h") and name != "half":  # h5.4+4.3: these heads (layer.head)
            chosen = [tuple(int(n) for n in h.split(".")) for h in name[1:].split("+")]
            rules[name] = rule_heads(chosen)  # type: ignore[arg-type]
        elif name == "all":
            rules[name] = rule_heads([tuple(h) for h in record["heads"]])
        elif name == "lasthalf":
            layers = 1 + max(layer for layer, _ in record["heads"])
            rules[name] = rule_heads([tuple(h) for h in record["heads"] if h[0] >= layers // 2])
        else:
            raise SystemExit(f"unknown rule {name}")
    return rules


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("choice", type=Path, help="the set the lag (and any head list) is chosen on")
    parser.add_argument("checks", type=Path, nargs="*", help="sets only scored")
    parser.add_argument("--rules", default="default")
    parser.add_argument("--per-head", action="store_true")
    parser.add_argument("--global-top", default="", help="k,... : the k best single heads on the choice set")
    parser.add_argument("--valley-lag", action="store_true", help="each set's own lag from energy valleys, no labels")
    args = parser.parse_args(argv)
    choice = load_record(args.choice)
    checks = []
    for path in args.checks:
        checks.append((path, load_record(path)))
    rules = named_rules(choice, [r for r in args.rules.split(",") if r])
    if args.per_head or args.global_top:
        ranked = per_head(choice)
        for k in [int(k) for k in args.global_top.split(",") if k]:
            best = [h for _, h, _, _ in ranked[:k]]
            lags = {h: round(lag / choice["chunks"][0].frame_seconds) for _, h, lag, _ in ranked[:k]}
            rules[f"global{k}"] = rule_heads(best)
            rules[f"global{k}shift"] = rule_heads(best, lags=lags)
            print(f"global{k}: {best}")
    for name, rule in rules.items():
        lag = labelled_lag(choice, rule)
        text = [f"{name} (lag {1000 * lag:+.0f} ms)", line(args.choice.name, score(choice, rule, lag))]
        for path, record in checks:
            text.append(line(path.name, score(record, rule, lag)))
        if args.valley_lag:
            for path, record in [(args.choice, choice), *checks]:
                own = unlabelled_lag(record, rule)
                text.append(line(f"{path.name} valley lag {1000 * own:+.0f} ms", score(record, rule, own)))
        print("  ".join(text), flush=True)


if __name__ == "__main__":
    main()
