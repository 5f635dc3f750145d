"""On real tiny.en weights under a name no code knows: the decoder finds the word-edge probe trained on those weights
(``adapters/mlx/edge_probe.py``), and on speech it was not trained on (timit_dev; it was trained on ljspeech_mfa)
the edges it gives are closer to the reference's than the refinement's without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
from onepass_whisper.adapters.mlx.edge_probe import PROBES, EdgeProbe
from onepass_whisper.application.evaluation import Metrics
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.eval_command import Utterance, read_corpus
from tests.integration.corpus_scoring import scored

FILES = 40  # ~8 word starts each: the run's own lag estimate (250 starts), the same with the probe or without

pytestmark = pytest.mark.slow


def scored_with(container: Container, utterances: list[Utterance], edge_probe: EdgeProbe | None) -> Metrics:
    decoder = container.decoder()
    assert isinstance(decoder, MlxWhisperDecoder)
    decoder.edge_probe = edge_probe
    return scored(container, utterances)


def test_the_probe_is_found_by_the_weights_and_moves_edges_closer(
    renamed_tiny_en: Path, eval_dir: Path, tmp_path: Path
) -> None:
    container = Container()
    container.config.model.from_value(str(renamed_tiny_en))
    container.config.cache_dir.from_value(tmp_path)
    container.config.align_processes.from_value(0)
    decoder = container.decoder()
    assert isinstance(decoder, MlxWhisperDecoder)
    probe = decoder.edge_probe
    shipped = EdgeProbe.load(PROBES / "tiny.en.json")
    assert probe is not None and probe.fingerprint == shipped.fingerprint
    np.testing.assert_array_equal(probe.weights, shipped.weights)
    utterances = read_corpus(eval_dir / "timit_dev", limit=FILES)
    with_probe = scored_with(container, utterances, probe)
    without = scored_with(container, utterances, None)
    assert with_probe.wer == without.wer  # the same words: only their edges moved
    assert with_probe.f1_50 > without.f1_50 + 0.03
    assert with_probe.start_mae_ms < without.start_mae_ms
