"""`app eval` edge to edge on a tiny dataset made here, with the fake decoder and aligner."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.errors import UnsupportedLanguageError
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import BatchProgress
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.conftest import REPO
from tests.fakes import FakeAligner, FakeDecoder, InMemoryAudioSource, tone

SCORE_WORDS = REPO.parent / "shared" / "tools" / "score-words"

# The fakes say "hello world" over each 2-s file: hello 0-1 s, world 1-2 s.
UTTERANCES = {
    "a/a1": ("Hello world.", [("hello", 0.0, 1.0), ("world", 1.1, 2.0)]),
    "b/c/c1": ("Hello there, world!", [("hello", 0.0, 0.6), ("there", 0.6, 1.2), ("world", 1.25, 2.0)]),
}


def write_dataset(root: Path, utterances: dict[str, tuple[str, list[tuple[str, float, float]]]]) -> None:
    for key, (text, words) in utterances.items():
        path = root / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        timed = [{"word": w, "start": s, "end": e} for w, s, e in words]
        record = {"audio": f"{path.stem}.wav", "text": text, "words": timed}
        path.write_text(json.dumps(record))
    (root / "a" / "notes.json").write_text(json.dumps({"about": "not an utterance"}))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "eval"
    write_dataset(root, UTTERANCES)
    return root


@pytest.fixture
def container() -> Iterator[Container]:
    c = Container()
    audio = InMemoryAudioSource({name: tone(2.0) for name in ("a0.wav", "a1.wav", "c1.wav")})
    with c.override_providers(audio=audio, decoder=FakeDecoder("hello world"), aligner=FakeAligner()):
        yield c


def run(container: Container, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["eval", *args], obj=container)
    return result.exit_code, result.stdout, result.stderr


def test_prints_a_legend_of_the_metrics(container: Container, dataset: Path) -> None:
    code, stdout, stderr = run(container, str(dataset))
    assert code == 0, stderr
    legend = stdout.split("\n\n")[-1]
    for term in (
        "WER %",
        "uncovered %",
        "start/end MAE ms",
        "bias ms",
        "≤50/100/200 ms %",
        "P/R/F1 @50/@200 ms",
        "precision =",
        "recall =",
        "harmonic mean",
    ):
        assert term in legend


def test_prints_tables_and_writes_scores_per_folder_and_overall(
    container: Container, dataset: Path, tmp_path: Path
) -> None:
    scores = tmp_path / "scores.json"

    code, stdout, stderr = run(container, str(dataset), "--json", str(scores))

    assert code == 0, stderr
    assert "| a | 1 | 2 | 0.0 | 0.00 | 50 | 0 | -50 | +0 | 2 |" in stdout  # the segment covers all the speech
    assert "| b/c | 1 | 3 | 33.3 | 0.00 | 125 | 200 | -125 | +200 | 2 |" in stdout
    record = json.loads(scores.read_text())
    overall = record["overall"]
    assert (overall["utterances"], overall["reference_words"], overall["matched_words"]) == (2, 5, 4)
    # the tables' units and rounding: percent to 0.1 for WER, whole ms, whole percent, P/R/F1 to 0.01
    assert overall["wer_percent"] == 20.0 and overall["uncovered_speech_percent"] == 0.0
    assert overall["start_mae_ms"] == 88 and overall["end_mae_ms"] == 100  # (100 + 250) / 4 = 87.5; 400 / 4
    assert overall["f1_50"] == 0.22  # 2 * 1 / 9: only a1's "hello" has both ends within 50 ms
    assert overall["f1_200"] == 0.44
    assert record["groups"]["b/c"]["end_bias_ms"] == 200
    assert record["groups"]["b/c"]["wer_percent"] == 33.3
    table_row = next(line for line in stdout.splitlines() if line.startswith("| overall | start"[:11]) and "/" in line)
    start_shares = "/".join(str(overall[f"start_within_{ms}_ms_percent"]) for ms in (50, 100, 200))
    assert table_row.split("|")[2].strip() == start_shares
    assert record["failed"] == []


def test_limit_and_exclude_choose_utterances(container: Container, dataset: Path, tmp_path: Path) -> None:
    write_dataset(dataset, {"a/a0": ("Hello world.", [("hello", 0.0, 1.0), ("world", 1.0, 2.0)])})
    scores = tmp_path / "scores.json"

    code, _, stderr = run(container, str(dataset), "--limit", "1", "--exclude", "b/c", "--json", str(scores))

    assert code == 0, stderr
    groups = json.loads(scores.read_text())["groups"]
    assert list(groups) == ["a"]
    assert groups["a"]["utterances"] == 1 and groups["a"]["start_mae_ms"] == 0.0  # a0, not a1


def test_an_unreadable_utterance_is_named_scored_as_silence_and_exits_1(
    container: Container, dataset: Path, tmp_path: Path
) -> None:
    write_dataset(dataset, {"a/missing": ("Gone.", [("gone", 0.0, 0.5)])})
    scores = tmp_path / "scores.json"

    code, _, stderr = run(container, str(dataset), "--json", str(scores))

    assert code == 1
    assert "missing.wav" in stderr
    record = json.loads(scores.read_text())
    assert record["failed"] == ["missing"]
    assert record["groups"]["a"]["reference_words"] == 3


def test_an_empty_dataset_is_an_error(container: Container, tmp_path: Path) -> None:
    code, _, stderr = run(container, str(tmp_path))

    assert code == 1
    assert "no utterances" in stderr


@pytest.mark.skipif(not SCORE_WORDS.exists(), reason=f"reference scorer not found at {SCORE_WORDS}")
def test_timing_metrics_agree_with_the_reference_scorer(container: Container, dataset: Path, tmp_path: Path) -> None:
    scores, hypotheses, reference = tmp_path / "scores.json", tmp_path / "hyp", tmp_path / "reference.json"
    (dataset / "a" / "notes.json").unlink()  # score-words reads every JSON file as an utterance

    code, _, stderr = run(container, str(dataset), "--json", str(scores), "--hypotheses", str(hypotheses))
    subprocess.run(
        [sys.executable, str(SCORE_WORDS), str(dataset), str(hypotheses), "--json", str(reference)],
        check=True,
        capture_output=True,
    )

    assert code == 0, stderr
    ours, theirs = json.loads(scores.read_text())["overall"], json.loads(reference.read_text())
    for key, digits in (("start_mae_ms", None), ("end_mae_ms", None), ("f1_50", 2), ("f1_200", 2)):
        assert ours[key] == round(theirs[key], digits), key  # ours rounded as the table prints them
    assert ours["start_within_100_ms_percent"] == round(100 * theirs["start_within_100"])


def test_options_reach_the_container(container: Container, dataset: Path) -> None:
    code, _, stderr = run(container, str(dataset), "--no-refine", "--batch-size", "3", "--model", "base")

    assert code == 0, stderr
    assert (container.config.refine(), container.config.batch_size(), container.config.model()) == (False, 3, "base")


class EnglishOnlyDecoder(FakeDecoder):
    """Refuses any language but English, as an English-only model does; keeps the languages it was asked for."""

    def __init__(self) -> None:
        super().__init__("hello world", name="fake.en")
        self.languages: list[str | None] = []

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.languages.append(options.language)
        if options.language not in (None, "en"):
            raise UnsupportedLanguageError(str(options.language), f"{self.name} is an English-only model")
        return super().decode_batch(windows, options)


@pytest.mark.parametrize(("language", "expected_code"), [(None, 0), ("en", 0), ("de", 2), (" ", 2)])
def test_language_reaches_the_decoder_and_a_bad_one_is_a_usage_error(
    dataset: Path, language: str | None, expected_code: int
) -> None:
    decoder = EnglishOnlyDecoder()
    container = Container()
    audio = InMemoryAudioSource({name: tone(2.0) for name in ("a1.wav", "c1.wav")})
    with container.override_providers(audio=audio, decoder=decoder, aligner=FakeAligner()):
        code, _, stderr = run(container, str(dataset), *(["--language", language] if language is not None else []))

    assert code == expected_code, stderr
    if language is not None and language.strip():
        assert set(decoder.languages) == {language}
    if language == "de":  # one line naming the language
        assert stderr.strip().splitlines() == ["error: unsupported language 'de': fake.en is an English-only model"]
