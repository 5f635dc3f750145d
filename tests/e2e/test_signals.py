"""SIGINT and SIGTERM in the middle of a run: ``app transcribe`` as a real process (``tests/e2e/slow_app.py``: the
real audio reader and writers, a fake model held at a chosen batch), signalled, then run again.

What must hold: the exit code (130 for SIGINT, 143 for SIGTERM), one error line, every finished input's files
complete, no file of an unfinished input, no temporary file, and a rerun that skips what was finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import onepass_whisper.entrypoints.transcribe_command as transcribe_module
from onepass_whisper.adapters.writers import write_atomically
from onepass_whisper.domain.audio import SAMPLE_RATE
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.exit_codes import ExitCode
from onepass_whisper.entrypoints.signals import Terminated, terminate_as_interrupt
from tests.e2e.formats import check_json_schema, read_json

REPO = Path(__file__).resolve().parents[2]
FORMATS = ("json", "srt", "tsv", "txt", "vtt")
INPUTS = ("a", "b", "c", "d")
PATIENCE = 120.0  # seconds: a safety net for a stuck process on a loaded machine, never a measurement


def _default_sigint() -> None:
    """A child started from a shell's background job inherits SIGINT ignored; Python then never raises
    KeyboardInterrupt. An interactive ``app`` has the default disposition: give the child that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str | Path], marks: Path, hold_at: int | None) -> subprocess.Popen[str]:
    env = {**os.environ, "SLOW_APP_MARKS": str(marks), "COLUMNS": "400"}
    env.pop("SLOW_APP_HOLD_AT", None)
    if hold_at is not None:
        env["SLOW_APP_HOLD_AT"] = str(hold_at)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.slow_app", "transcribe", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the process ended before {path.name}: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path.name} after {PATIENCE} s")
        time.sleep(0.05)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for name in INPUTS:
        sf.write(folder / f"{name}.wav", 0.3 * np.sin(2 * np.pi * 220 * t), SAMPLE_RATE, subtype="PCM_16")
    return folder


def files_of(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED)],
    ids=["SIGINT", "SIGTERM"],
)
@pytest.mark.parametrize("hold_at", [1, 3], ids=["before any result", "after two results"])
def test_a_signal_mid_run_keeps_finished_files_whole_and_a_rerun_skips_them(
    inputs: Path, tmp_path: Path, signum: signal.Signals, code: ExitCode, hold_at: int
) -> None:
    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()
    args: list[str | Path] = [inputs, "-o", out, "--batch-size", "1"]  # one input per batch

    process = start(args, marks, hold_at)
    wait_for(marks / f"batch-{hold_at}", process)  # inputs before it are written, it is being decoded
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=PATIENCE)

    finished = INPUTS[: hold_at - 1]
    assert process.returncode == code, stderr
    assert (
        stderr.splitlines()[-1] == f"error: interrupted after {len(finished)} of {len(INPUTS)} inputs; rerun to resume"
    )
    assert "Traceback" not in stderr
    assert files_of(out) == sorted(f"{name}.{fmt}" for name in finished for fmt in FORMATS)  # no .part file
    for name in finished:
        check_json_schema(read_json(out / f"{name}.json"))

    rerun = start(args, marks, hold_at=None)
    _, stderr = rerun.communicate(timeout=PATIENCE)

    assert rerun.returncode == ExitCode.OK, stderr
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped ")]
    assert skipped == [
        f"skipped {inputs / name}.wav: its outputs exist (use --overwrite to replace them)" for name in finished
    ]
    assert f"{len(INPUTS) - len(finished)} transcribed" in stderr
    assert files_of(out) == sorted(f"{name}.{fmt}" for name in INPUTS for fmt in FORMATS)


def test_sigterm_while_a_file_is_written_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """In this process: the CLI's SIGTERM handler turns the signal into an exception where the program is, here in
    the middle of a write; the atomic writer removes its temporary file and the old transcript stays."""
    target = tmp_path / "a.txt"
    target.write_text("old complete transcript\n")

    def half_then_terminated(file: TextIO) -> None:
        file.write("new but trunc")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(PATIENCE)  # the handler raises before this returns

    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or Ray's handler once a test started Ray in this process
    with pytest.raises(Terminated), terminate_as_interrupt():
        write_atomically(target, half_then_terminated)
    assert target.read_text() == "old complete transcript\n"
    assert files_of(tmp_path) == ["a.txt"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is only set during the command


@pytest.mark.parametrize(("interrupt", "code"), [(KeyboardInterrupt(), 130), (Terminated(signal.SIGTERM), 143)])
def test_an_interrupt_before_the_run_is_still_exit_130_or_143(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: KeyboardInterrupt, code: int
) -> None:
    """While the inputs are being found (a slow network folder), not only while decoding."""

    def find_inputs(_paths: object) -> None:
        raise interrupt

    monkeypatch.setattr(transcribe_module, "find_inputs", find_inputs)
    result = CliRunner().invoke(app, ["transcribe", str(tmp_path), "-o", str(tmp_path / "out")], obj=Container())
    assert result.exit_code == code
    assert result.stderr.splitlines() == ["error: interrupted; rerun to resume"]
