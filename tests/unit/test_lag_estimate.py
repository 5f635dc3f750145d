"""``adapters/dtw/lag.py``: a model's lag from DTW's word starts against the audio's energy valleys, and the two
phases of ``LagAligner``; ``JsonLagStore``, where the estimate is kept between runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from attrs import evolve

from onepass_whisper.adapters.dtw import DtwAligner, LagAligner, estimate_lag
from onepass_whisper.adapters.dtw.lag import valley_pulls
from onepass_whisper.adapters.dtw.lag_store import JsonLagStore
from onepass_whisper.domain.audio import ChunkSegment, DecodedChunk, LagEvidence, Window
from tests.unit.test_aligner import bursts


def dipped_windows(lag: float, windows: int = 6, seed: int = 1) -> list[LagEvidence]:
    """Words of 200-300 ms meeting at 30-ms dips (no pause); DTW's starts come ``lag`` late."""
    rng = np.random.default_rng(seed)
    evidence = []
    for _ in range(windows):
        starts = np.cumsum(rng.uniform(0.2, 0.3, size=50)) + 0.3
        levels = np.full(round((starts[-1] + 0.5) / 0.01), -20.0)
        for start in starts:
            levels[round(start / 0.01) - 1 : round(start / 0.01) + 2] = -35.0
        evidence.append(LagEvidence(starts[1:] + lag, levels))
    return evidence


@pytest.mark.parametrize("lag", [-0.08, 0.0, 0.09])
def test_the_lag_is_the_shift_of_dtws_starts_from_the_dips_between_words(lag: float) -> None:
    assert estimate_lag(dipped_windows(lag)) == pytest.approx(lag, abs=0.015)


def test_too_few_boundaries_give_no_estimate() -> None:
    evidence = dipped_windows(0.05, windows=1)  # 49 starts
    assert estimate_lag(evidence) is None
    assert estimate_lag(evidence, min_boundaries=40) == pytest.approx(0.05, abs=0.015)
    assert estimate_lag([]) is None and estimate_lag([LagEvidence()], min_boundaries=0) is None


def test_a_slope_without_a_valley_pulls_nowhere() -> None:
    levels = np.linspace(-20.0, -60.0, 100)  # falling towards a pause beyond the reach: no dip near 0.5 s
    assert valley_pulls(np.array([0.5]), levels, 0.0).size == 0
    levels[44:47] = -70.0  # a 30-ms dip 50 ms before the boundary
    assert valley_pulls(np.array([0.5]), levels, 0.0) == pytest.approx([-0.05])


def test_the_estimate_is_the_same_for_the_same_evidence_in_any_order() -> None:
    evidence = dipped_windows(-0.06, seed=3)
    assert estimate_lag(evidence) == estimate_lag(evidence[::-1])


def speech_chunk(attention: np.ndarray, samples: np.ndarray) -> DecodedChunk:
    words = (" a", " b", " c", " d")
    segment = ChunkSegment(0.0, 3.7, "".join(words), words, (1, 1, 1, 1))
    return DecodedChunk(
        Window(0, 0, 0.0, samples), "en", (segment,), np.full(4, 0.9, np.float32), attention.astype(np.float32)
    )


def test_measuring_keeps_dtws_token_times_and_drops_the_attention() -> None:
    from tests.unit.test_lag import WORDS, shifted_attention

    chunk = speech_chunk(shifted_attention(WORDS, 0.06, 185), bursts(WORDS, 3.7))
    aligner = LagAligner(DtwAligner())
    measured, evidence = aligner.measure(chunk)
    assert measured.token_frames is not None and measured.attention.size == 0
    assert evidence.boundaries == 3  # the interior word starts, DTW's raw times (no lag taken off)
    raw = [w.start for words in DtwAligner(refine=False).align(chunk) for w in words][1:]
    assert evidence.starts.tolist() == raw
    # the second phase gives what the aligner with that lag gives on the original chunk
    assert aligner.with_lag(0.06).align(measured) == DtwAligner(lag_seconds=0.06).align(chunk)
    silent = evolve(chunk, window=evolve(chunk.window, samples=bursts([], 3.7)))
    assert aligner.measure(silent)[1].boundaries == 0  # no contrast: says nothing


def test_the_store_keeps_the_lag_from_the_most_boundaries(tmp_path: Path) -> None:
    store = JsonLagStore.for_model(tmp_path, "large-v3")
    assert store.load() is None
    store.save(0.05, 300)
    store.save(0.09, 200)  # from fewer boundaries: not kept
    assert store.load() == 0.05
    store.save(-0.02, 900)
    assert JsonLagStore.for_model(tmp_path, "large-v3").load() == -0.02
    assert JsonLagStore.for_model(tmp_path, "base").load() is None  # another model
    assert json.loads(store.path.read_text())["boundaries"] == 900


def test_a_folder_is_keyed_by_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models" / "mybase"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    JsonLagStore.for_model(tmp_path / "cache", "models/mybase").save(0.07, 400)
    assert JsonLagStore.for_model(tmp_path / "cache", str(folder)).load() == 0.07


def test_an_unwritable_cache_keeps_nothing_and_fails_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    store = JsonLagStore.for_model(blocker, "base")
    store.save(0.05, 300)
    assert store.load() is None
