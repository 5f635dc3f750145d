"""On real tiny.en weights, in a folder no code knows by name: the default's lag comes from the speech it times
(``adapters/dtw/lag.py``, ``application/run_lag.py``), close to the lag measured against reference word times,
and the same input gives the same times."""

from __future__ import annotations

from pathlib import Path

import pytest

from onepass_whisper.adapters.dtw.lag_store import JsonLagStore
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.container import Container

# tiny.en's labelled lag on ljspeech_mfa and timit_dev (docs/alignment.md): DTW's edges come ~90 ms late
TINY_EN_LAG = 0.09
FILES = 24  # ~16 word starts each: enough for a run's estimate (adapters/dtw/lag.py's MIN_BOUNDARIES)


def times(container: Container, files: list[Path]) -> list[tuple[float, float]]:
    options = TranscribeOptions(language="en")
    results = list(container.service().transcribe_many(files, options))
    return [(w.start, w.end) for r in results if r.transcript is not None for w in r.transcript.words]


@pytest.mark.slow
def test_a_model_no_table_knows_gets_its_lag_from_the_speech(
    renamed_tiny_en: Path, eval_dir: Path, tmp_path: Path
) -> None:
    files = sorted((eval_dir / "ljspeech_mfa").glob("*.wav"))[:FILES]
    container = Container()
    container.config.model.from_value(str(renamed_tiny_en))
    container.config.cache_dir.from_value(tmp_path)
    container.config.align_processes.from_value(0)
    first = times(container, files)
    lag = JsonLagStore.for_model(tmp_path, str(renamed_tiny_en)).load()  # the run's estimate, kept
    assert lag is not None and lag == pytest.approx(TINY_EN_LAG, abs=0.035)
    assert times(container, files) == first  # the same run again: the same times
