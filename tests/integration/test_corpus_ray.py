"""``app transcribe-corpus`` on the real adapters: the embedded tiny.en, loaded by a Ray worker, on copies of the
bundled sample (one worker: on 2 CPU cores a second model load costs more than it saves here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jiwer
import pytest
from typer.testing import CliRunner

from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.e2e.formats import check_json_schema, read_srt

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.wav"
REFERENCE = REPO / "samples" / "sample.txt"
MAX_WER = 0.15  # as tests/e2e/test_cli_real.py: tiny.en on clean read speech


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower().replace("-", " ")).split())


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_the_real_model_on_a_ray_worker_transcribes_a_small_corpus(tiny_en_folder: Path, tmp_path: Path) -> None:
    if not SAMPLE.is_file() or not REFERENCE.is_file():
        pytest.skip(f"the bundled sample is missing: {SAMPLE.relative_to(REPO)}")
    corpus = tmp_path / "corpus"
    for name in ("one.wav", "two.wav", "talks/three.wav"):
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE, corpus / name)
    out = tmp_path / "out"
    args = ["transcribe-corpus", str(corpus), "-o", str(out), "--model", str(tiny_en_folder), "--files-per-batch", "2"]

    result = CliRunner().invoke(app, [*args, "-f", "json"], obj=Container())

    assert result.exit_code == 0, result.output
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    records: dict[str, Any] = {r["file"]: r for r in map(json.loads, lines)}
    assert sorted(records) == ["one.wav", "talks/three.wav", "two.wav"] and len(lines) == 3
    reference = normalise(REFERENCE.read_text(encoding="utf-8"))
    for file, record in records.items():
        assert record["status"] == "done" and record["error"] is None and record["seconds"] > 0
        document = json.loads((out / Path(file).with_suffix(".json")).read_text(encoding="utf-8"))
        check_json_schema(document)
        assert record["duration"] == pytest.approx(document["duration"], abs=1e-3)
        assert jiwer.wer(reference, normalise(document["text"])) <= MAX_WER, document["text"]
        words = [w for s in document["segments"] for w in s["words"]]
        assert words and all(0 <= w["start"] <= w["end"] <= document["duration"] + 1e-3 for w in words)

    rerun = CliRunner().invoke(app, [*args, "-f", "json"], obj=Container())  # resumes: nothing left to do
    assert rerun.exit_code == 0 and "3 files done in an earlier run" in rerun.stderr
    assert len((out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()) == 3

    srt = CliRunner().invoke(app, [*args, "-f", "srt"], obj=Container())  # another format: its files are missing
    assert srt.exit_code == 0, srt.output
    assert all(read_srt(out / Path(file).with_suffix(".srt")) for file in records)


@pytest.mark.slow
def test_quiet_prints_only_the_summary_and_ray_keeps_its_lines(tiny_en_folder: Path, tmp_path: Path) -> None:
    """The command in its own process, starting its own local Ray: Ray's INFO/WARNING lines (token
    authentication, "Started a local Ray instance") and its core's ``E ... core_worker`` notes stay off stderr."""
    if not SAMPLE.is_file():
        pytest.skip(f"the bundled sample is missing: {SAMPLE.relative_to(REPO)}")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SAMPLE, corpus / "one.wav")
    short = Path(tempfile.mkdtemp(prefix="op-"))  # TMPDIR, where Ray's sockets go too: at most 107 bytes a path
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(short)}
    args = [
        sys.executable,
        "-m",
        "onepass_whisper",
        "transcribe-corpus",
        str(corpus),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_en_folder),
        "-f",
        "txt",
        "--quiet",
    ]
    try:
        completed = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        left = list(short.glob("onepass-ray-*.log"))
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert completed.returncode == 0, completed.stderr
    assert re.fullmatch(r"1 transcribed in [\d.]+ s \(1 workers, [\d.]+ s of audio per second\)\n", completed.stderr), (
        completed.stderr
    )
    assert (tmp_path / "out" / "one.txt").is_file()
    assert left == []  # a successful run's file is removed
