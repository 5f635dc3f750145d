"""The service with an aligner that estimates the model's lag from the speech (``application/run_lag.py``): which
evidence each file's lag comes from, the fallbacks, and when files are held back for the run's lag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onepass_whisper.application.run_lag import RunLag
from onepass_whisper.application.transcription import FileResult, TranscriptionService
from onepass_whisper.domain.audio import LagEvidence
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from tests.fakes import FakeDecoder, FakeLagAligner, FakeLagStore, InMemoryAudioSource, tone

SHORT, LONG = 4.0, 100.0  # seconds: one window (4 boundaries of FakeLagAligner's evidence), four windows (16)


def run(
    durations: dict[str, float], aligner: FakeLagAligner, store: FakeLagStore | None = None, batch_size: int = 4
) -> tuple[list[FileResult], FakeDecoder]:
    decoder = FakeDecoder()
    service = TranscriptionService(
        audio=InMemoryAudioSource({name: tone(seconds) for name, seconds in durations.items()}),
        decoder=decoder,
        aligner=aligner,
        batch_size=batch_size,
        lag_store=store,
    )
    return list(service.transcribe_many([Path(name) for name in durations], TranscribeOptions())), decoder


def lag_of(result: FileResult) -> float:
    """The lag the fake aligner took off: the first window's last word ends that much before the window does."""
    transcript = result.transcript
    assert isinstance(transcript, Transcript)
    return min(transcript.duration, 30.0) - transcript.words[1].end


def lags(results: list[FileResult]) -> dict[str, float]:
    return {str(r.source): round(lag_of(r), 6) for r in results}


def test_a_file_with_enough_boundaries_gets_its_own_lag_and_keeps_it() -> None:
    store = FakeLagStore()
    results, _ = run({"long.wav": LONG}, FakeLagAligner(per_window=4, enough=10), store)
    assert lags(results) == {"long.wav": 0.016}  # its four windows' 16 boundaries
    assert store.kept == (0.016, 16)


def test_short_files_wait_for_the_runs_pooled_lag() -> None:
    store = FakeLagStore(lag=0.5, boundaries=10_000)  # a kept lag is not used where the run has enough
    results, decoder = run({f"{i}.wav": SHORT for i in range(5)}, FakeLagAligner(per_window=4, enough=10), store)
    assert lags(results) == {f"{i}.wav": 0.02 for i in range(5)}  # all five files' 20 boundaries
    assert decoder.batches == [4, 1]  # the first batch's files were held until the run ended


def test_the_runs_lag_is_fixed_once_settled_and_later_files_get_it_at_once() -> None:
    aligner = FakeLagAligner(per_window=400, enough=1000, seconds_per_boundary=1e-5)
    results, _ = run({f"{i}.wav": SHORT for i in range(5)}, aligner, batch_size=1)
    # the third file's evidence brings the run to 1200 boundaries: that is the run's lag, for the later files too
    assert lags(results) == {f"{i}.wav": 0.012 for i in range(5)}
    assert [str(r.source) for r in results] == [f"{i}.wav" for i in range(5)]


def test_a_long_file_keeps_its_own_lag_beside_short_ones() -> None:
    results, _ = run({"a.wav": SHORT, "long.wav": LONG, "b.wav": SHORT}, FakeLagAligner(per_window=4, enough=10))
    assert lags(results) == {"long.wav": 0.016, "a.wav": 0.024, "b.wav": 0.024}  # the run's: 4 + 16 + 4


def test_a_run_too_short_takes_the_kept_lag_else_none() -> None:
    aligner = FakeLagAligner(per_window=4, enough=10)
    kept, _ = run({"a.wav": SHORT}, aligner, FakeLagStore(lag=0.03, boundaries=500))
    assert lags(kept) == {"a.wav": 0.03}
    none, _ = run({"a.wav": SHORT}, aligner, FakeLagStore())
    assert lags(none) == {"a.wav": 0.0}
    alone, _ = run({"a.wav": SHORT}, aligner)
    assert lags(alone) == {"a.wav": 0.0}


def test_the_store_keeps_the_estimate_from_the_most_boundaries() -> None:
    store = FakeLagStore()
    chain = RunLag(FakeLagAligner(enough=10), store, settle_boundaries=30)
    assert chain.of_file([]) is None  # no evidence: held
    twelve = [LagEvidence(np.linspace(0.1, 0.9, 12), np.zeros(100))]
    assert chain.of_file(twelve) == pytest.approx(0.012)  # its own, and kept
    assert chain.of_file(twelve) == pytest.approx(0.012)  # as many boundaries again: nothing new kept
    assert chain.of_file(twelve) == pytest.approx(0.012)  # its own; the run settles at 36 boundaries
    assert chain.fixed == pytest.approx(0.036)
    assert chain.pool == []  # settled: the evidence is let go (a server would keep every window's otherwise)
    assert chain.of_file(twelve) == pytest.approx(0.012) and chain.pool == []
    assert [(round(lag, 6), n) for lag, n in store.saved] == [(0.012, 12), (0.036, 36)]
    assert chain.at_end() == pytest.approx(0.036)


def test_without_word_timestamps_nothing_is_measured() -> None:
    aligner = FakeLagAligner()
    decoder = FakeDecoder()
    service = TranscriptionService(audio=InMemoryAudioSource({"a.wav": tone(SHORT)}), decoder=decoder, aligner=aligner)
    transcript = service.transcribe(Path("a.wav"), TranscribeOptions(word_timestamps=False))
    assert transcript.words == () and aligner.measured == 0


def scheduled_lags(durations: list[float], store: FakeLagStore | None, settle: int) -> list[float]:
    """The lag each request got from a server, its requests sent one after the other."""
    from onepass_whisper.application.scheduler import BatchScheduler

    aligner = FakeLagAligner(per_window=4, enough=10)
    lags = []
    with BatchScheduler(lambda: FakeDecoder(), aligner, batch_size=4, gather_seconds=0.0, lag_store=store) as server:
        assert server._lag is not None
        server._lag.settle_boundaries = settle
        for seconds in durations:
            transcript = server.submit(tone(seconds), TranscribeOptions()).future.result(timeout=10.0)
            lags.append(round(lag_of(FileResult("x", transcript)), 6))
    return lags


def test_a_server_request_gets_its_own_lag_else_the_servers_else_the_kept_one_and_is_never_held() -> None:
    # short (nothing known: 0), long (its own, from 16 boundaries, kept), short (the kept lag: the server's
    # 24 boundaries are not yet the 28 that settle it), short (the server's, settled at 28)
    assert scheduled_lags([SHORT, LONG, SHORT, SHORT], FakeLagStore(), settle=28) == [0.0, 0.016, 0.016, 0.028]
    assert scheduled_lags([SHORT], FakeLagStore(lag=0.03, boundaries=500), settle=28) == [0.03]
