"""The encoder's word-edge probe: its scores (``adapters/mlx/edge_probe.py``), which model gets one, and the
aligner's last refinement step that moves boundaries between words onto the best-scored frames."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.adapters.dtw.refine import EDGE_SEARCH_SECONDS, snap_to_edges
from onepass_whisper.adapters.mlx.edge_probe import PROBES, EdgeProbe, fingerprint
from tests.unit.test_aligner import TEXTS, assert_still_ordered, bursts, chunk_of, edges_of, flat

FRAME = 0.02


def peak_at(frame: int, frames: int = 150) -> np.ndarray:
    logits = np.full(frames, -5.0, np.float32)
    logits[frame] = 3.0
    return logits


def test_a_boundary_between_words_moves_to_the_best_scored_frame_within_reach() -> None:
    starts, ends = snap_to_edges(np.array([0.0, 1.04]), np.array([1.04, 2.0]), peak_at(50), FRAME)
    assert starts[1] == ends[0] == pytest.approx(50.5 * FRAME)
    # a peak beyond the reach is not this boundary's: the best frame within it is taken
    far = round((1.04 + EDGE_SEARCH_SECONDS) / FRAME) + 3
    starts, ends = snap_to_edges(np.array([0.0, 1.04]), np.array([1.04, 2.0]), peak_at(far), FRAME)
    assert abs(starts[1] - 1.04) <= EDGE_SEARCH_SECONDS + FRAME and starts[1] == ends[0]
    # a boundary with a gap (a pause put it there) stays
    starts, ends = snap_to_edges(np.array([0.0, 1.1]), np.array([1.04, 2.0]), peak_at(50), FRAME)
    assert starts.tolist() == [0.0, 1.1] and ends.tolist() == [1.04, 2.0]


def test_no_word_is_squeezed_to_nothing_by_a_peak_on_its_edge() -> None:
    # the peak sits on the first word's start: the boundary stops short of it
    starts, ends = snap_to_edges(np.array([1.0, 1.06]), np.array([1.06, 2.0]), peak_at(50), FRAME)
    assert starts[1] == ends[0] > 1.0 + FRAME / 2


@given(
    starts=st.lists(st.floats(0.0, 2.9), max_size=12),
    logits=st.lists(st.floats(-10.0, 10.0), min_size=0, max_size=150),
)
def test_edge_snapping_keeps_words_ordered(starts: list[float], logits: list[float]) -> None:
    times = np.sort(np.array([*starts, 3.0]))
    before = (times[:-1], times[1:])  # words meeting their neighbours
    after = snap_to_edges(*before, np.array(logits, np.float32), FRAME)
    assert_still_ordered(before, after, min_length=FRAME / 2 - 1e-9)


def test_the_aligner_moves_boundaries_between_words_onto_the_probe_s_edges() -> None:
    chunk = chunk_of(TEXTS, [0.0, 0.80, 1.50, 2.60], 3.20, bursts([], 3.7))  # no contrast: no audio refinement
    plain = flat(DtwAligner(refine=True).align(chunk))
    logits = np.full(chunk.window.num_frames, -5.0, np.float32)
    logits[[42, 73, 128]] = 3.0  # 0.85, 1.47, 2.57 s
    probed = flat(DtwAligner(refine=True).align(attrs.evolve(chunk, edge_logits=logits)))
    assert edges_of(plain)[1:-1] == pytest.approx([0.80, 0.80, 1.50, 1.50, 2.60, 2.60])
    assert edges_of(probed)[1:-1] == pytest.approx([0.85, 0.85, 1.47, 1.47, 2.57, 2.57])
    # whisper's plain times take nothing from the audio, nor from the probe
    assert DtwAligner(refine=False).align(attrs.evolve(chunk, edge_logits=logits)) == DtwAligner(refine=False).align(
        chunk
    )


def fake_model(weight: np.ndarray, bias: np.ndarray) -> Any:
    ln_post = SimpleNamespace(weight=mx.array(weight), bias=mx.array(bias))
    return SimpleNamespace(encoder=SimpleNamespace(ln_post=ln_post), dims=SimpleNamespace(n_audio_state=len(weight)))


def write_probe(folder: Path, name: str, model: Any, state: int) -> EdgeProbe:
    rng = np.random.default_rng(len(name))
    weights, bias = rng.normal(size=(2, state)).round(4), 0.25
    data = {"fingerprint": fingerprint(model), "weights": weights.tolist(), "bias": bias}
    (folder / f"{name}.json").write_text(json.dumps(data))
    return EdgeProbe(weights.T, bias, fingerprint(model))


def test_a_model_gets_the_probe_trained_on_its_weights_and_no_other(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    one = fake_model(rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32))
    other = fake_model(rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32))
    written = write_probe(tmp_path, "one", one, 8)
    write_probe(tmp_path, "another", other, 8)
    found = EdgeProbe.for_model(one, tmp_path)
    assert found is not None and found.fingerprint == written.fingerprint
    np.testing.assert_array_equal(found.weights, written.weights)
    # the same weights loaded in another dtype (float16 checkpoints loaded as float32, or back) are the same model
    half = fake_model(np.array(one.encoder.ln_post.weight), np.array(one.encoder.ln_post.bias))
    half.encoder.ln_post.weight = half.encoder.ln_post.weight.astype(mx.float16)
    assert fingerprint(half) == fingerprint(one)
    unknown = fake_model(rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32))
    assert EdgeProbe.for_model(unknown, tmp_path) is None  # a model no file knows: no probe, today's timing
    assert EdgeProbe.for_model(one, tmp_path / "missing") is None


def test_the_shipped_probes_are_small_and_well_formed() -> None:
    files = sorted(PROBES.glob("*.json"))
    assert files
    for path in files:
        assert path.stat().st_size < 100_000
        probe = EdgeProbe.load(path)
        assert probe.weights.ndim == 2 and probe.weights.shape[1] == 2 and np.isfinite(probe.weights).all()
        assert len(probe.fingerprint) == 16


@given(frames=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_scores_are_the_frame_and_its_neighbours_difference_through_the_weights(frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    state = 6
    probe = EdgeProbe(rng.normal(size=(state, 2)), float(rng.normal()), "x")
    features = rng.normal(size=(2, 50, state)).astype(np.float32)
    projected = probe.project(mx.array(features))
    assert projected.shape == (2, 50, 2)
    for window in range(2):
        f = features[window, :frames]
        logits = probe.logits(projected[window], frames)
        expected = [
            f[t] @ probe.weights[:, 0]
            + (f[min(t + 1, frames - 1)] - f[max(t - 1, 0)]) @ probe.weights[:, 1]
            + probe.bias
            for t in range(frames)
        ]
        np.testing.assert_allclose(logits, np.array(expected, np.float32), rtol=1e-4, atol=1e-4)
