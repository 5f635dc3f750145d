"""Do the encoder's own frames show where words meet? A linear boundary probe, measured offline (issue 23 item 2).

Step 1 (``features``): every recorded window (``benchmarks.record_windows``) is encoded again, as the decoder encodes
it, and every encoder block's output over the window's real frames is kept (``--layer 4``: the fifth block's):

    PYTHONPATH=. .venv/bin/python -m benchmarks.encoder_boundaries features /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/enc-ljspeech_mfa-base.pkl --model base

Step 2 (``probe``): a logistic regression over those frames (label: a reference word edge lies in the frame) is
trained on the first set and used on the others: each interior boundary of today's refined timing that meets its
neighbour without a pause moves to the most probable frame within ``--reach`` of it. Scored with ``app eval``'s
``score_corpus``, the lag chosen on the training set as ``benchmarks.edge_heads`` does:

    PYTHONPATH=. .venv/bin/python -m benchmarks.encoder_boundaries probe /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/enc-ljspeech_mfa-base.pkl /tmp/edges-timit_dev-base.pkl /tmp/enc-timit_dev-base.pkl --layer 3

Within the training set the probe is scored by two-fold cross-validation over its windows (half trains, half is
timed).

Step 3 (``export``): the probe on the encoder's output (the last block), trained on the whole set, written as the
product reads it (``adapters/mlx/edge_probe.py``):

    PYTHONPATH=. .venv/bin/python -m benchmarks.encoder_boundaries export /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/enc-ljspeech_mfa-base.pkl adapters/mlx/edge_probes/base.json --model base
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import evolve, frozen
from numpy.typing import NDArray

from benchmarks.edge_heads import RuleAligner, hypotheses, labelled_lag, line, load_record, rule_default
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import Metrics, score_corpus
from onepass_whisper.domain.audio import DecodedChunk
from onepass_whisper.domain.model import Word


def encoder_layers(model: Any, samples: NDArray[np.float32], frames: int) -> NDArray[np.float32]:
    """layers × frames × state: every encoder block's output (the last after ``ln_post``) over the real frames,
    through mlx-whisper's own encoder modules (slow on the CPU: minutes for a few dozen windows)."""
    import mlx.core as mx
    import mlx.nn as nn

    from onepass_whisper.adapters.mlx.encoder import window_mel

    encoder = model.encoder
    mel = window_mel(samples, model.dims.n_mels)[None].astype(model.decoder.token_embedding.weight.dtype)
    x = nn.gelu(encoder.conv1(mel))  # type: ignore[attr-defined]  # mlx.nn re-exports it untyped
    x = nn.gelu(encoder.conv2(x))  # type: ignore[attr-defined]
    x = x + encoder._positional_embedding
    outputs = []
    for i, block in enumerate(encoder.blocks):
        x, _, _ = block(x)
        outputs.append(encoder.ln_post(x) if i == len(encoder.blocks) - 1 else x)
    stacked = mx.stack([o[0, :frames] for o in outputs])
    return np.array(stacked.astype(mx.float32))


def features(record_path: Path, output: Path, model_name: str) -> None:
    from onepass_whisper.entrypoints.container import Container

    container = Container()
    container.config.model.from_value(model_name)
    model = container.decoder().model  # type: ignore[attr-defined]  # first: it binds MLX's fast BLAS
    record = load_record(record_path)
    kept = [encoder_layers(model, c.window.samples, c.attention.shape[-1]).astype(np.float16) for c in record["chunks"]]
    with output.open("wb") as out:
        pickle.dump(kept, out)
    print(f"{len(kept)} windows -> {output}")


def labels(chunk: DecodedChunk, reference: Any, frames: int) -> NDArray[np.float32]:
    """Per frame, 1 where a reference word edge (a start, or an end not at the next word's start) lies in it."""
    y = np.zeros(frames, np.float32)
    edges = [w.start for w in reference.words] + [w.end for w in reference.words]
    for t in edges:
        index = int((t - chunk.window.offset) / chunk.frame_seconds)
        if 0 <= index < frames:
            y[index] = 1.0
    return y


def fit(x: NDArray[np.float32], y: NDArray[np.float32], l2: float = 1.0, steps: int = 300) -> NDArray[np.float64]:
    """Logistic regression by Newton steps on standardised features (weights with the bias last)."""
    xb = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    w = np.zeros(xb.shape[1])
    for _ in range(min(steps, 25)):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        gradient = xb.T @ (p - y) + l2 * np.r_[w[:-1], 0.0]
        hessian = (xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return w


def frame_inputs(layer_frames: NDArray[np.floating], context: int) -> NDArray[np.float32]:
    """frames × state -> frames × (state × (2 context + 1)): each frame with its neighbours' differences."""
    f = layer_frames.astype(np.float32)
    parts = [f]
    for k in range(1, context + 1):
        after = np.vstack([f[k:], np.repeat(f[-1:], k, axis=0)])
        before = np.vstack([np.repeat(f[:1], k, axis=0), f[:-k]])
        parts.append(after - before)
    return np.hstack(parts)


@frozen
class Probe:
    weights: NDArray[np.float64]
    mean: NDArray[np.float32]
    scale: NDArray[np.float32]
    layer: int
    context: int

    def probabilities(self, encoded: NDArray[np.floating]) -> NDArray[np.float64]:
        x = (frame_inputs(encoded[self.layer], self.context) - self.mean) / self.scale
        return np.asarray(1.0 / (1.0 + np.exp(-(x @ self.weights[:-1] + self.weights[-1]))), np.float64)


def train(
    record: Mapping[str, Any],
    encoded: Sequence[NDArray[np.float16]],
    which: Sequence[int],
    layer: int,
    context: int,
    l2: float,
) -> Probe:
    xs, ys = [], []
    for i in which:
        chunk = record["chunks"][i]
        frames = chunk.attention.shape[-1]
        xs.append(frame_inputs(encoded[i][layer], context))
        ys.append(labels(chunk, record["refs"][chunk.window.source], frames))
    x = np.vstack(xs)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    return Probe(fit((x - mean) / scale, np.concatenate(ys), l2), mean, scale, layer, context)


@frozen
class ProbeAligner:
    """Today's refined timing, then each pause-free interior boundary to the probe's most probable frame nearby."""

    inner: RuleAligner
    probes: Mapping[int, Probe]  # chunk id -> the probe that may time it (one not trained on it)
    encoded: Mapping[int, NDArray[np.float16]]
    reach: float

    def align(self, chunk: DecodedChunk) -> Any:
        words = self.inner.align(chunk)
        flat = [w for segment in words for w in segment]
        if len(flat) < 2 or id(chunk) not in self.probes:
            return words
        p = self.probes[id(chunk)].probabilities(self.encoded[id(chunk)])
        fs = chunk.frame_seconds
        starts = [w.start for w in flat]
        ends = [w.end for w in flat]
        for i in range(1, len(flat)):
            if abs(starts[i] - ends[i - 1]) > 1e-6:
                continue  # a pause: the refinement placed it on the audio
            b = starts[i]
            lo = max(int((b - self.reach) / fs), int(starts[i - 1] / fs) + 1)
            hi = min(int((b + self.reach) / fs), int(ends[i] / fs) - 1, len(p) - 1)
            if hi < lo:
                continue
            best = lo + int(np.argmax(p[lo : hi + 1]))
            t = (best + 0.5) * fs
            starts[i] = ends[i - 1] = t
        return regrouped(words, starts, ends)


def regrouped(words: Any, starts: Any, ends: Any) -> tuple[tuple[Word, ...], ...]:
    """``words`` (segments of words) with the flat ``starts`` and ``ends`` (one a word, in order) as their times."""
    out, k = [], 0
    for segment in words:
        out.append(tuple(Word(w.text, starts[k + j], ends[k + j], w.probability) for j, w in enumerate(segment)))
        k += len(segment)
    return tuple(out)


def score(record: Mapping[str, Any], aligner: Any) -> Metrics:
    return score_corpus(record["refs"], hypotheses(record, aligner), WhisperTextMetrics()).overall


def probe(args: argparse.Namespace) -> None:
    train_record = load_record(args.train)
    with args.train_features.open("rb") as f:
        train_encoded = pickle.load(f)
    lag = labelled_lag(train_record, rule_default)
    heads = tuple(map(tuple, train_record["heads"]))
    inner = RuleAligner(rule_default, heads, train_record, True, lag)
    print(line(f"today (lag {1000 * lag:+.0f} ms) {args.train.name}", score(train_record, inner)))
    n = len(train_record["chunks"])
    folds = [list(range(0, n, 2)), list(range(1, n, 2))]
    probes = {}
    for k, fold in enumerate(folds):
        p = train(train_record, train_encoded, folds[1 - k], args.layer, args.context, args.l2)
        probes.update({id(train_record["chunks"][i]): p for i in fold})
    encoded = {id(c): e for c, e in zip(train_record["chunks"], train_encoded, strict=True)}
    for reach in args.reach:
        aligner = ProbeAligner(inner, probes, encoded, reach)
        print(line(f"probe layer {args.layer} reach {reach} {args.train.name} (2-fold)", score(train_record, aligner)))
    full = train(train_record, train_encoded, range(n), args.layer, args.context, args.l2)
    for check_path, feature_path in zip(args.checks[::2], args.checks[1::2], strict=True):
        record = load_record(check_path)
        with feature_path.open("rb") as f:
            check_encoded = pickle.load(f)
        inner = evolve(inner, record=record, heads=tuple(map(tuple, record["heads"])))
        print(line(f"today {check_path.name}", score(record, inner)))
        encoded = {id(c): e for c, e in zip(record["chunks"], check_encoded, strict=True)}
        for reach in args.reach:
            aligner = ProbeAligner(inner, {id(c): full for c in record["chunks"]}, encoded, reach)
            print(line(f"probe layer {args.layer} reach {reach} {check_path.name}", score(record, aligner)))


def export(args: argparse.Namespace) -> None:
    """The probe on the encoder's output (its last block, after ``ln_post``: what the decoder holds), trained on the
    whole set and folded into ``adapters/mlx/edge_probe.EdgeProbe``'s form: the standardisation goes into the
    weights and the bias, the neighbours' difference into a second weight vector."""
    from onepass_whisper.entrypoints.container import Container

    container = Container()
    container.config.model.from_value(args.model)
    model = container.decoder().model  # type: ignore[attr-defined]  # first: it binds MLX's fast BLAS
    from onepass_whisper.adapters.mlx.edge_probe import fingerprint

    record = load_record(args.train)
    with args.train_features.open("rb") as f:
        encoded = pickle.load(f)
    probe = train(record, encoded, range(len(record["chunks"])), -1, 1, args.l2)
    scaled = probe.weights[:-1] / probe.scale
    state = model.dims.n_audio_state
    assert scaled.shape == (2 * state,)
    bias = float(probe.weights[-1] - (scaled * probe.mean).sum())
    data = {
        "model": args.model,
        "fingerprint": fingerprint(model),
        "trained_on": f"{args.train.name}: {len(record['chunks'])} windows, l2 {args.l2}",
        "weights": [[float(f"{w:.6g}") for w in scaled[:state]], [float(f"{w:.6g}") for w in scaled[state:]]],
        "bias": bias,
    }
    args.output.write_text(json.dumps(data) + "\n")
    print(f"{args.output}: fingerprint {data['fingerprint']}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    f = commands.add_parser("features")
    f.add_argument("record", type=Path)
    f.add_argument("output", type=Path)
    f.add_argument("--model", default="tiny.en")
    p = commands.add_parser("probe")
    p.add_argument("train", type=Path)
    p.add_argument("train_features", type=Path)
    p.add_argument("checks", type=Path, nargs="*", help="record, features, ...")
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--context", type=int, default=1)
    p.add_argument("--l2", type=float, default=10.0)
    p.add_argument("--reach", type=float, nargs="+", default=[0.04, 0.06])
    e = commands.add_parser("export")
    e.add_argument("train", type=Path)
    e.add_argument("train_features", type=Path)
    e.add_argument("output", type=Path)
    e.add_argument("--model", default="tiny.en")
    e.add_argument("--l2", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.command == "features":
        features(args.record, args.output, args.model)
    elif args.command == "export":
        export(args)
    else:
        probe(args)


if __name__ == "__main__":
    main()
