"""Non-speech gives an empty transcript, in every format, at batch 1 and 16, on the real tiny.en (issue 21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.exit_codes import ExitCode
from tests.e2e.formats import read_json, read_srt, read_tsv, read_vtt

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"
RATE = 16000


def write_inputs(folder: Path) -> list[Path]:
    """Digital silence (10 s, 0.2 s), a 50-Hz hum with harmonics, white noise, a truncated WAV, and real speech."""
    rng = np.random.default_rng(0)
    t = np.arange(10 * RATE) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5))
    signals = {
        "silence.wav": np.zeros(10 * RATE),
        "short.wav": np.zeros(RATE // 5),
        "hum.wav": 0.01 * hum / np.sqrt(np.mean(hum**2)),  # -40 dBFS
        "noise.wav": 0.03 * rng.standard_normal(10 * RATE),
    }
    paths = []
    for name, samples in signals.items():
        sf.write(folder / name, samples.astype(np.float32), RATE, subtype="PCM_16")
        paths.append(folder / name)
    (folder / "truncated.wav").write_bytes(SAMPLE.read_bytes()[:300])  # a header and a few samples
    return [*paths, folder / "truncated.wav", SAMPLE]


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 16])
def test_non_speech_gives_an_empty_transcript_in_every_format(tmp_path: Path, batch_size: int) -> None:
    if not SAMPLE.is_file():
        pytest.skip("the bundled sample is missing")
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = write_inputs(inputs)
    out = tmp_path / "out"
    args = ["transcribe", *map(str, paths), "-o", str(out), "--batch-size", str(batch_size), "--quiet"]
    result = CliRunner().invoke(app, args, obj=Container())
    # the 300-byte WAV is also a file cut short (its header declares the whole sample): named, and exit 5
    assert result.exit_code == ExitCode.TRUNCATED, result.output
    assert "truncated.wav is cut short" in result.stderr
    for path in paths[:-1]:
        stem = out / path.stem
        document = read_json(stem.with_suffix(".json"))
        assert document["text"] == "" and document["segments"] == [], (path.name, document["text"])
        assert stem.with_suffix(".txt").read_text() == ""
        assert read_srt(stem.with_suffix(".srt")) == [] and read_vtt(stem.with_suffix(".vtt")) == []
        assert read_tsv(stem.with_suffix(".tsv")) == []
    speech = read_json(out / "sample.json")
    assert len([w for s in speech["segments"] for w in s["words"]]) > 20  # the speech beside them is kept
