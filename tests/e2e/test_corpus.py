"""``app transcribe-corpus`` on the session's local Ray instance, with fake adapters shipped to the workers.

The workers are real Ray actors in their own processes; the fakes travel in the container's overrides. A worker
is killed mid-file by ``CrashingAudioSource`` (``os._exit`` while loading a given file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from typer.testing import CliRunner, Result

import onepass_whisper.entrypoints as entrypoints_package
from onepass_whisper.adapters.writers import TranscriptFiles
from onepass_whisper.domain.audio import Truncation, Waveform
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.corpus_command import INSTALL_HINT, CorpusExit
from tests.fakes import (
    CrashingAudioSource,
    FakeAligner,
    FakeDecoder,
    FakeModelSource,
    InMemoryAudioSource,
    tone,
)

REPO = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "400"}
SECONDS = {"a.wav": 3.0, "b.wav": 5.0, "long.wav": 70.0, "c.flac": 4.0, "once.wav": 2.0, "always.wav": 2.0}
LAYOUT = {"a.wav": "a.wav", "b.wav": "sub/b.wav", "long.wav": "sub/deeper/long.wav", "c.flac": "c.flac"}


def waveforms() -> dict[str, Waveform]:
    return {name: tone(seconds) for name, seconds in SECONDS.items()}


def corpus(root: Path, *names: str) -> Path:
    """Empty files where the command looks; the fake audio source serves them by name."""
    folder = root / "corpus"
    for name in names:
        path = folder / LAYOUT.get(name, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return folder


def container_with(audio: object) -> Container:
    container = Container()
    container.override_providers(audio=audio, decoder=FakeDecoder("hello corpus"), aligner=FakeAligner())
    return container


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    yield container_with(CrashingAudioSource(waveforms(), tmp_path))


def run(container: Container, folder: Path, out: Path, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["transcribe-corpus", str(folder), "--output-dir", str(out), *args], obj=container, env=WIDE
    )


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def latest(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["file"]: record for record in records}


@pytest.mark.usefixtures("ray_local")
def test_a_file_cut_short_is_done_with_a_warning_its_manifest_line_and_exit_6(tmp_path: Path) -> None:
    cut = Truncation.check(2.0, 60.0)
    assert cut is not None
    audio = InMemoryAudioSource({"a.wav": tone(3.0), "cut.wav": attrs.evolve(tone(2.0), truncated=cut)})
    folder, out = corpus(tmp_path, "a.wav", "cut.wav"), tmp_path / "out"

    result = run(container_with(audio), folder, out, "-f", "json", "--quiet")

    assert result.exit_code == CorpusExit.TRUNCATED, result.output
    by_file = latest(manifest(out))
    assert by_file["cut.wav"]["status"] == "done" and by_file["cut.wav"]["truncated"] == cut.describe()
    assert by_file["a.wav"]["truncated"] is None
    assert f"warning: cut.wav is {cut.describe()}; transcribed what is there" in result.stderr
    assert "2 transcribed, 1 cut short" in result.stderr
    assert json.loads((out / "cut.json").read_text(encoding="utf-8"))["duration"] == pytest.approx(2.0)


@pytest.mark.usefixtures("ray_local")
def test_writes_every_transcript_and_a_manifest_line_per_file(container: Container, tmp_path: Path) -> None:
    folder = corpus(tmp_path, "a.wav", "b.wav", "long.wav", "c.flac", "unreadable.wav")
    out = tmp_path / "out"

    result = run(container, folder, out, "--workers", "2", "--files-per-batch", "2", "-f", "json")

    assert result.exit_code == CorpusExit.FILES_FAILED, result.output
    records = manifest(out)
    assert sorted(r["file"] for r in records) == sorted(
        ["a.wav", "sub/b.wav", "sub/deeper/long.wav", "c.flac", "unreadable.wav"]
    )
    by_file = latest(records)
    for name, relative in LAYOUT.items():
        record = by_file[relative]
        assert record["status"] == "done" and record["error"] is None and record["attempts"] == 1
        assert record["duration"] == pytest.approx(SECONDS[name])
        assert record["seconds"] >= 0
        document = json.loads((out / Path(relative).with_suffix(".json")).read_text(encoding="utf-8"))
        assert document["text"].startswith("hello corpus") and document["duration"] == pytest.approx(SECONDS[name])
    assert by_file["unreadable.wav"]["status"] == "failed"
    assert "cannot read audio" in by_file["unreadable.wav"]["error"]
    assert by_file["unreadable.wav"]["duration"] is None
    assert not list(out.rglob("unreadable.*")) and not list(out.rglob("*.srt"))  # -f json: only json
    assert "4 transcribed, 1 failed" in result.stderr and "error: unreadable.wav: cannot read audio" in result.stderr


@pytest.mark.usefixtures("ray_local")
def test_a_rerun_resumes_from_the_manifest(container: Container, tmp_path: Path) -> None:
    folder = corpus(tmp_path, "a.wav", "b.wav", "unreadable.wav")
    out = tmp_path / "out"
    assert run(container, folder, out, "-f", "txt").exit_code == CorpusExit.FILES_FAILED
    assert len(manifest(out)) == 3

    again = run(container, folder, out, "-f", "txt")  # nothing to do; the earlier failure is not forgotten
    assert again.exit_code == CorpusExit.FILES_FAILED, again.output
    assert len(manifest(out)) == 3
    assert "2 files done in an earlier run" in again.stderr and "1 files failed in an earlier run" in again.stderr

    (out / "sub" / "b.txt").unlink()  # done, but its transcript is gone: done again
    (folder / "new.wav").touch()  # new in the folder: done (fails here: the fake source does not know it)
    third = run(container, folder, out, "-f", "txt")
    assert third.exit_code == CorpusExit.FILES_FAILED
    assert sorted(r["file"] for r in manifest(out)[3:]) == ["new.wav", "sub/b.wav"]
    assert (out / "sub" / "b.txt").is_file()

    retried = run(container, folder, out, "-f", "txt", "--retry-failed", "--quiet")
    assert retried.exit_code == CorpusExit.FILES_FAILED
    assert sorted(r["file"] for r in manifest(out)[5:]) == ["new.wav", "unreadable.wav"]
    assert "done a.wav" not in retried.stderr  # --quiet


@pytest.mark.usefixtures("ray_local")
def test_a_killed_worker_has_its_files_retried_and_a_file_that_kills_twice_fails(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    audio = CrashingAudioSource(waveforms(), markers, crash_once={"once.wav"}, crash_always={"always.wav"})
    folder = corpus(tmp_path, "a.wav", "b.wav", "c.flac", "once.wav", "always.wav")
    out = tmp_path / "out"

    result = run(container_with(audio), folder, out, "--workers", "2", "--files-per-batch", "3", "-f", "txt")

    assert result.exit_code == CorpusExit.FILES_FAILED, result.output
    assert (markers / "once.wav.crashed").exists() and (markers / "always.wav.crashed").exists()  # both killed
    by_file = latest(manifest(out))
    assert set(by_file) == {"a.wav", "sub/b.wav", "c.flac", "once.wav", "always.wav"}
    for file in ("a.wav", "sub/b.wav", "c.flac", "once.wav"):
        assert by_file[file]["status"] == "done", by_file[file]
        assert (out / Path(file).with_suffix(".txt")).read_text(encoding="utf-8").strip() == "hello corpus"
    assert by_file["once.wav"]["attempts"] == 2  # died once, done on the second try
    failed = by_file["always.wav"]
    assert failed["status"] == "failed" and failed["attempts"] >= 2
    assert failed["error"].startswith("worker lost 2 times while transcribing it")
    assert len(manifest(out)) == 5  # one line per file: retries are not recorded as outcomes
    assert "4 transcribed, 1 failed" in result.stderr


@pytest.mark.usefixtures("ray_local")
def test_an_unexpected_exception_in_a_worker_fails_that_file_after_two_tries(tmp_path: Path) -> None:
    audio = CrashingAudioSource(waveforms(), tmp_path, raise_always={"always.wav"})
    folder = corpus(tmp_path, "a.wav", "always.wav", "b.wav")
    out = tmp_path / "out"

    result = run(container_with(audio), folder, out, "--files-per-batch", "3")

    assert result.exit_code == CorpusExit.FILES_FAILED, result.output
    by_file = latest(manifest(out))
    assert by_file["a.wav"]["status"] == by_file["sub/b.wav"]["status"] == "done"
    assert by_file["always.wav"]["status"] == "failed"
    assert "RuntimeError: unexpected failure on always.wav" in by_file["always.wav"]["error"]
    assert by_file["always.wav"]["attempts"] == 3  # in the batch of three, then twice alone


@pytest.mark.usefixtures("ray_local")
def test_a_model_that_cannot_be_loaded_stops_the_run_with_exit_3(tmp_path: Path) -> None:
    container = Container()
    container.override_providers(model_source=FakeModelSource({}), audio=CrashingAudioSource(waveforms(), tmp_path))
    folder = corpus(tmp_path, "a.wav")

    result = run(container, folder, tmp_path / "out", "--model", "no-such-model")

    assert result.exit_code == CorpusExit.MODEL, result.output
    assert "cannot load model 'no-such-model': unknown model" in result.stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


@pytest.mark.usefixtures("ray_local")
def test_gpus_the_cluster_lacks_are_refused_with_exit_5(container: Container, tmp_path: Path) -> None:
    result = run(container, corpus(tmp_path, "a.wav"), tmp_path / "out", "--gpus-per-worker", "1")
    assert result.exit_code == CorpusExit.RAY, result.output
    assert "a worker needs 1 GPUs and the cluster has 0" in result.stderr


def test_without_ray_the_command_says_how_to_install_it(
    container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "onepass_whisper.entrypoints.ray_engine", raising=False)  # as in a fresh process
    monkeypatch.delattr(entrypoints_package, "ray_engine", raising=False)

    result = run(container, corpus(tmp_path, "a.wav"), tmp_path / "out")

    assert result.exit_code == CorpusExit.RAY, result.output
    assert result.stderr.strip() == f"error: transcribe-corpus needs Ray, which is not installed: {INSTALL_HINT}"


def test_an_empty_folder_is_an_error(container: Container, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run(container, tmp_path / "empty", tmp_path / "out")
    assert result.exit_code == CorpusExit.FILES_FAILED and "no audio files found" in result.stderr


def test_the_cli_imports_without_ray() -> None:
    code = "import sys, onepass_whisper.entrypoints.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


def test_workers_take_the_drivers_blas_threads_not_rays(monkeypatch: pytest.MonkeyPatch) -> None:
    from onepass_whisper.entrypoints.ray_engine import WorkerSettings

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the driver's own choice
    settings = WorkerSettings.of(Container(), TranscribeOptions(), TranscriptFiles())
    assert settings.threads == {"OMP_NUM_THREADS": "3"}

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what Ray sets in an actor with 2 CPUs
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    settings.use_threads()
    assert os.environ["OMP_NUM_THREADS"] == "3" and "OPENBLAS_NUM_THREADS" not in os.environ


def test_phonetic_without_pocketsphinx_is_a_usage_error(
    container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("onepass_whisper.entrypoints.options.phonetic_available", lambda: False)
    result = run(container, corpus(tmp_path, "a.wav"), tmp_path / "out", "--phonetic")
    assert result.exit_code == 2 and "pip install 'pocketsphinx" in result.stderr
    assert not (tmp_path / "out").exists()


def test_workers_build_the_aligner_the_driver_configured() -> None:
    from onepass_whisper.adapters.phonetic import PhoneticLagAligner
    from onepass_whisper.entrypoints.ray_engine import WorkerSettings

    container = Container()
    container.config.phonetic.from_value(True)
    with container.override_providers(decoder=FakeDecoder()):
        settings = WorkerSettings.of(container, TranscribeOptions(), TranscriptFiles())
    service = settings.service()
    assert isinstance(service.aligner, PhoneticLagAligner) and service.align_processes == 0
    assert service.lag_store is not None  # a worker keeps and reads the model's lag as the driver would


def test_an_unreachable_remote_cluster_says_how_to_set_up_token_authentication() -> None:
    from onepass_whisper.entrypoints.ray_engine import unreachable

    failure = ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")
    message = unreachable("10.0.0.1:6379", failure, {})
    assert message.startswith("cannot start or reach the Ray cluster at 10.0.0.1:6379: Failed to connect")
    assert "RAY_AUTH_MODE=token" in message and "RAY_AUTH_TOKEN" in message and "ray get-auth-token" in message
    assert "RAY_AUTH_MODE" not in unreachable("10.0.0.1:6379", failure, {"RAY_AUTH_MODE": "token"})
    assert "RAY_AUTH_MODE" not in unreachable(None, RuntimeError("no space left"), {})  # a local instance


def test_ray_lines_go_to_a_file_and_the_commands_own_lines_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from onepass_whisper.entrypoints.corpus_command import ray_lines_to_file

    console = Console(stderr=True)
    with ray_lines_to_file(False, console) as path:
        os.write(2, b"[2026-12-07 10:13:30,165 E 19777 19777] core_worker.cc:2465: Actor ...\n")
        console.print("done a.wav")
    assert path is not None and "core_worker" in path.read_text()
    path.unlink()
    err = capfd.readouterr().err
    assert "done a.wav" in err and "core_worker" not in err
    with ray_lines_to_file(True, console) as shown:  # --verbose
        os.write(2, b"E core_worker\n")
    assert shown is None and "E core_worker" in capfd.readouterr().err
