"""Issue 26 on the real base (and tiny.en): each segment's language, the warnings, word grouping and no segment of
zero length, on synthetic espeak-ng speech (``tests/data/languages/README.md``). Skipped where base is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner, Result

from onepass_whisper.domain.words import SPACELESS_LANGUAGES
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.e2e.formats import check_json_schema, read_json, read_srt

DATA = Path(__file__).resolve().parents[1] / "data" / "languages"
WIDE = {"COLUMNS": "400"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _base_installed() -> None:
    from onepass_whisper.adapters.models import CachedModelSource

    if not {i.name: i for i in CachedModelSource().known()}["base"].installed:
        pytest.skip("base is not installed: app models --install base (or make models)")


def transcribe(*args: str | Path) -> Result:
    result = CliRunner().invoke(app, ["transcribe", *map(str, args)], obj=Container(), env=WIDE)
    assert result.exit_code == 0, result.output  # warnings never change the exit code
    return result


def warnings(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_detection_per_segment_doubts_and_words_of_japanese(tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(48_000, np.float32), 16_000)
    result = transcribe(
        DATA / "fr_short.wav", DATA / "ja.wav", silence, "--model", "base", "-o", tmp_path, "--max-line-width", "6"
    )
    said = warnings(result)
    assert len(said) == 2, said
    assert said[0].startswith(f"warning: {DATA / 'fr_short.wav'}: its language was detected as ") and (
        "if that is wrong, give it with --language" in said[0]
    )
    assert said[1].startswith(f"warning: {silence}: no speech found")

    short = read_json(tmp_path / "fr_short.json")
    check_json_schema(short)
    assert short["language_probability"] < 0.7 and [d["kind"] for d in short["doubts"]] == ["uncertain_language"]

    japanese = read_json(tmp_path / "ja.json")
    check_json_schema(japanese)
    assert japanese["language"] == "ja" and japanese["language_probability"] > 0.7 and japanese["doubts"] == []
    assert {(s["language"], s["language_probability"]) for s in japanese["segments"]} == {
        ("ja", japanese["language_probability"])
    }
    words = [w["word"].strip() for s in japanese["segments"] for w in s["words"]]
    assert "ja" in SPACELESS_LANGUAGES and any(len(w) >= 2 and w.isalpha() for w in words), words
    lines = [line for _, _, text in read_srt(tmp_path / "ja.srt") for line in text.split("\n")]
    assert all(_whole_words(line.strip(), words) for line in lines), (lines, words)  # no line ends inside a word

    assert read_json(tmp_path / "silence.json")["doubts"] == [{"kind": "no_speech", "score": None}]


def test_french_alone_at_every_temperature_has_no_empty_segment(tmp_path: Path) -> None:
    """``--language fr`` on French (the issue's case), greedy and sampled at 1.0 only: every segment and cue spans
    time, each segment says French, and nothing was detected."""
    for temperatures in ("0,0.2,0.4,0.6,0.8,1.0", "1.0"):
        result = transcribe(DATA / "fr.wav", "--model", "base", "--language", "fr", "--temperature", temperatures,
                            "-o", tmp_path / temperatures)  # fmt: skip
        assert warnings(result) == []
        document = read_json(tmp_path / temperatures / "fr.json")
        check_json_schema(document)  # start < end for every segment
        assert {(s["language"], s["language_probability"]) for s in document["segments"]} == {("fr", None)}
        assert all(end > start for start, end, _ in read_srt(tmp_path / temperatures / "fr.srt"))


def test_an_english_only_model_on_french_says_so(tmp_path: Path) -> None:
    said = warnings(transcribe(DATA / "fr.wav", "--model", "tiny.en", "-o", tmp_path))
    assert said == [
        f"warning: {DATA / 'fr.wav'}: the speech does not score as English for the English-only model tiny.en (mean"
        f" log-probability {read_json(tmp_path / 'fr.json')['doubts'][0]['score']:.2f}); for other languages use a"
        " multilingual model: --model base"
    ]


def _whole_words(line: str, words: list[str]) -> bool:
    """Whether ``line`` is a run of whole ``words`` (spaces between them allowed)."""
    line = line.lstrip()
    if not line:
        return True
    return any(w and line.startswith(w) and _whole_words(line[len(w) :], words) for w in words)
