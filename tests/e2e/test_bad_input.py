"""The bad-input battery (issue #8): ``app transcribe`` on files nobody checked, through the real audio reader.

Every case runs the command on real files (written here with soundfile) with the real ``FileAudioSource``; the
model is a fake, because what is tested is what the user gets (the one-line error, the exit code, the files
written), not what a model hears. The cases that need the real model (silence, white noise, clipping, sample
rates) are in ``tests/integration/test_bad_input_real.py``. ``docs/reliability.md`` lists every case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray
from typer.testing import CliRunner, Result

from onepass_whisper.adapters.audio_file import NOT_AUDIO
from onepass_whisper.adapters.av_audio import NO_AUDIO_STREAM
from onepass_whisper.domain.audio import SAMPLE_RATE
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.exit_codes import ExitCode
from onepass_whisper.entrypoints.inputs import AUDIO_SUFFIXES
from tests import media
from tests.e2e.formats import check_json_schema, read_json
from tests.fakes import FakeAligner, FakeDecoder

TEXT = "hello world"


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    """The real audio reader and model source (cache in ``tmp_path``); a fake model and aligner."""
    c = Container()
    c.config.cache_dir.from_value(tmp_path / "cache")
    with c.override_providers(decoder=FakeDecoder(TEXT), aligner=FakeAligner()):
        yield c


def tone(seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 0.3) -> NDArray[np.float64]:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * 220 * t)  # (frames,)


def wav(path: Path, samples: NDArray[np.floating], rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype, format="FLAC" if path.suffix == ".flac" else "WAV")
    return path


def run(container: Container, *args: str | Path) -> Result:
    return CliRunner().invoke(app, ["transcribe", *map(str, args)], obj=container, env={"COLUMNS": "400"})


def errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def outputs(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------------------- inputs that cannot be read


def _missing(folder: Path) -> Path:
    return folder / "nope.wav"


def _no_audio_folder(folder: Path) -> Path:
    (folder / "docs").mkdir()
    (folder / "docs" / "readme.txt").write_text("no audio here\n")
    return folder / "docs"


def _empty(folder: Path) -> Path:
    (folder / "empty.wav").touch()
    return folder / "empty.wav"


def _cut_in_header(folder: Path) -> Path:
    whole = wav(folder / "whole.wav", tone(1.0)).read_bytes()
    (folder / "cut.wav").write_bytes(whole[:30])
    return folder / "cut.wav"


def _random_bytes(folder: Path) -> Path:
    (folder / "noise.wav").write_bytes(np.random.default_rng(8).bytes(4096))
    return folder / "noise.wav"


def _text_as_mp3(folder: Path) -> Path:
    (folder / "notes.mp3").write_text("these are not the sounds you are looking for\n" * 20)
    return folder / "notes.mp3"


def _no_samples(folder: Path) -> Path:
    return wav(folder / "none.wav", np.zeros(0))


def _header_only(folder: Path) -> Path:
    whole = wav(folder / "whole.wav", tone(1.0)).read_bytes()
    (folder / "header.wav").write_bytes(whole[:44])  # the canonical 44-byte header, no data
    return folder / "header.wav"


def _a_folder_named_wav_inside_a_folder(folder: Path) -> Path:
    (folder / "fake.wav").mkdir()
    (folder / "fake.wav" / "x.txt").write_text("x")
    return folder / "fake.wav"


def _m4a_cut_before_its_index(folder: Path) -> Path:
    memo = media.kind(folder / "memo.m4a", tone(2.0), SAMPLE_RATE, "memo.m4a")  # its index (moov) at the end
    return media.cut(memo, 0.6)


UNREADABLE: dict[str, tuple[Callable[[Path], Path], Callable[[Path], str]]] = {
    # case: (make the input in a folder, the expected error line for it)
    "missing path": (_missing, lambda p: f"error: {p}: no such file or folder"),
    "folder with no audio": (
        _no_audio_folder,
        lambda p: f"error: {p}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})",
    ),
    "0-byte file": (_empty, lambda p: f"error: cannot read audio {p}: file is empty"),
    "WAV cut inside its header": (
        _cut_in_header,
        lambda p: f"error: cannot read audio {p}: corrupt or truncated audio (Error in WAV file. No 'data' chunk "
        "marker)",
    ),
    "random bytes named .wav": (_random_bytes, lambda p: f"error: cannot read audio {p}: {NOT_AUDIO}"),
    "text file named .mp3": (_text_as_mp3, lambda p: f"error: cannot read audio {p}: {NOT_AUDIO}"),
    "WAV with 0 samples": (_no_samples, lambda p: f"error: cannot read audio {p}: no samples"),
    "WAV header without data": (_header_only, lambda p: f"error: cannot read audio {p}: no samples"),
    "folder named .wav without audio": (
        _a_folder_named_wav_inside_a_folder,
        lambda p: f"error: {p}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})",
    ),
    "video without sound": (
        lambda folder: media.silent_video(folder / "silent.mp4"),
        lambda p: f"error: cannot read audio {p}: {NO_AUDIO_STREAM}",
    ),
    "M4A cut before its index": (
        _m4a_cut_before_its_index,
        lambda p: f"error: cannot read audio {p}: corrupt or truncated audio (an MP4/M4A file without its index: "
        "cut short before it was finished?)",
    ),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_input_is_one_error_line_and_exit_1(container: Container, tmp_path: Path, case: str) -> None:
    make, expected = UNREADABLE[case]
    (tmp_path / "in").mkdir()
    bad = make(tmp_path / "in")
    out = tmp_path / "out"

    result = run(container, bad, "-o", out)

    assert result.exit_code == ExitCode.INPUTS_FAILED, result.output
    assert errors(result) == [expected(bad)]
    assert "Traceback" not in result.output
    assert outputs(out) == []


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_input_never_stops_the_good_ones(container: Container, tmp_path: Path, case: str) -> None:
    make, expected = UNREADABLE[case]
    (tmp_path / "in").mkdir()
    bad = make(tmp_path / "in")
    first, last = wav(tmp_path / "in" / "first.wav", tone(2.0)), wav(tmp_path / "in" / "last.wav", tone(3.0))
    out = tmp_path / "out"

    result = run(container, first, bad, last, "-o", out, "-f", "json")

    assert result.exit_code == ExitCode.INPUTS_FAILED, result.output
    assert errors(result) == [expected(bad)]
    assert outputs(out) == ["first.json", "last.json"]
    assert [read_json(out / f"{n}.json")["text"] for n in ("first", "last")] == [TEXT, TEXT]
    assert "2 transcribed, 1 failed" in result.stderr


def test_a_folder_mixing_good_and_bad_files(container: Container, tmp_path: Path) -> None:
    """Every good transcript is written; the exit is 1; each bad file is named on its own error line."""
    folder = tmp_path / "in"
    good = [wav(folder / "a.wav", tone(2.0)), wav(folder / "sub" / "b.flac", tone(4.0), subtype="PCM_24")]
    bad = {
        _empty(folder): "file is empty",
        _random_bytes(folder): NOT_AUDIO,
        _text_as_mp3(folder): NOT_AUDIO,
        _no_samples(folder): "no samples",
    }
    (folder / "sub" / "cut.wav").write_bytes(wav(folder / "sub" / "whole.wav", tone(1.0)).read_bytes()[:30])
    good.append(folder / "sub" / "whole.wav")
    bad[folder / "sub" / "cut.wav"] = "corrupt or truncated audio (Error in WAV file. No 'data' chunk marker)"
    out = tmp_path / "out"

    result = run(container, folder, "-o", out, "-f", "json")

    assert result.exit_code == ExitCode.INPUTS_FAILED, result.output
    assert sorted(errors(result)) == sorted(f"error: cannot read audio {p}: {why}" for p, why in bad.items())
    assert outputs(out) == ["a.json", "sub/b.json", "sub/whole.json"]
    for name, seconds in (("a", 2.0), ("sub/b", 4.0), ("sub/whole", 1.0)):
        document = read_json(out / f"{name}.json")
        check_json_schema(document)
        assert (document["text"], document["duration"]) == (TEXT, seconds)
    assert "3 transcribed, 5 failed" in result.stderr


# ------------------------------------------------------------------------------- odd but readable audio


def _nan_everywhere(path: Path) -> Path:
    return wav(path, np.full(SAMPLE_RATE, np.nan), subtype="FLOAT")


def _nan_and_inf_inside_a_tone(path: Path) -> Path:
    samples = tone(2.0)
    samples[1000:1100], samples[5000], samples[9000] = np.nan, np.inf, -np.inf
    return wav(path, samples, subtype="FLOAT")


def _cut_in_data(path: Path) -> Path:
    whole = wav(path, tone(2.0)).read_bytes()  # wav() makes the folder
    path.write_bytes(whole[: 44 + 2 * SAMPLE_RATE])  # the header and 1 s of 16-bit samples
    return path


READABLE: dict[str, tuple[Callable[[Path], Path], float, str]] = {
    # case: (write the file, its duration in seconds, the text the fake model hears in it)
    "10 ms of audio": (lambda p: wav(p, tone(0.01)), 0.01, TEXT),
    "8 kHz": (lambda p: wav(p, tone(2.0, 8_000), 8_000), 2.0, TEXT),
    "22.05 kHz": (lambda p: wav(p, tone(2.0, 22_050), 22_050), 2.0, TEXT),
    "44.1 kHz": (lambda p: wav(p, tone(2.0, 44_100), 44_100), 2.0, TEXT),
    "48 kHz": (lambda p: wav(p, tone(2.0, 48_000), 48_000), 2.0, TEXT),
    "stereo": (lambda p: wav(p, np.stack([tone(2.0), tone(2.0, amplitude=0.1)], axis=1)), 2.0, TEXT),
    "24-bit": (lambda p: wav(p, tone(2.0), subtype="PCM_24"), 2.0, TEXT),
    "float": (lambda p: wav(p, tone(2.0), subtype="FLOAT"), 2.0, TEXT),
    "float above 1.0": (lambda p: wav(p, tone(2.0, amplitude=4.0), subtype="FLOAT"), 2.0, TEXT),
    "clipped": (lambda p: wav(p, np.clip(tone(2.0, amplitude=20.0), -1.0, 1.0)), 2.0, TEXT),
    "NaN and inf inside speech": (_nan_and_inf_inside_a_tone, 2.0, TEXT),
    "NaN everywhere (silence)": (_nan_everywhere, 1.0, ""),
}


@pytest.mark.parametrize("case", READABLE)
def test_odd_but_readable_audio_is_transcribed(container: Container, tmp_path: Path, case: str) -> None:
    write, duration, text = READABLE[case]
    path = write(tmp_path / "in.wav")
    out = tmp_path / "out"

    result = run(container, path, "-o", out, "-f", "json")

    assert result.exit_code == ExitCode.OK, result.output
    assert errors(result) == []
    document = read_json(out / "in.json")
    check_json_schema(document)
    assert document["duration"] == pytest.approx(duration, abs=1e-3)
    assert document["text"] == text
    times = [t for segment in document["segments"] for w in segment["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times) and all(0.0 <= t <= document["duration"] for t in times)


@pytest.mark.parametrize("name", sorted(media.KINDS))
def test_voice_memos_and_videos_are_transcribed(container: Container, tmp_path: Path, name: str) -> None:
    """Issue 21: an iPhone memo, videos and a browser recording failed with "not an audio file"."""
    folder = tmp_path / "in"
    media.kind(folder / name, tone(2.0), SAMPLE_RATE, name)
    out = tmp_path / "out"

    result = run(container, folder, "-o", out, "-f", "json")  # a folder scan finds them too

    assert result.exit_code == ExitCode.OK, result.output
    document = read_json(out / f"{Path(name).stem}.json")
    check_json_schema(document)
    assert (document["text"], document["truncated"]) == (TEXT, None)
    assert document["duration"] == pytest.approx(2.0, abs=0.06)


# ------------------------------------------------------------------------------------------------ cut short


def _cut_m4a(path: Path) -> Path:
    whole = media.encode(
        path.with_name("whole.m4a"), tone(4.0), SAMPLE_RATE, fmt="ipod", codec="aac", faststart=True
    )  # the index first, as a phone writes it
    return media.cut(whole, 0.5, path)


CUT_SHORT: dict[str, tuple[str, Callable[[Path], Path], float]] = {
    # case: (file name, write it, the length its header declares)
    "WAV cut inside its data": ("in.wav", _cut_in_data, 2.0),
    "M4A cut inside its audio": ("in.m4a", _cut_m4a, 4.0),
}


@pytest.mark.parametrize("case", CUT_SHORT)
def test_a_file_cut_short_is_transcribed_marked_and_exits_5(container: Container, tmp_path: Path, case: str) -> None:
    """Issue 21, item 3: what is there is transcribed; stderr names the file and both lengths; the JSON says so;
    exit 5 (done, needs a look), while a whole file beside it is written as usual."""
    name, write, declared = CUT_SHORT[case]
    path = write(tmp_path / "in" / name)
    whole = wav(tmp_path / "in" / "whole.wav", tone(1.0))
    out = tmp_path / "out"

    result = run(container, path, whole, "-o", out, "-f", "json")

    assert result.exit_code == ExitCode.TRUNCATED, result.output
    assert int(ExitCode.TRUNCATED) == 5  # documented
    document = read_json(out / "in.json")
    check_json_schema(document)
    assert document["text"] == TEXT
    assert document["truncated"]["expected_duration"] == pytest.approx(declared, abs=0.05)
    held = document["duration"]
    assert 0.2 * declared < held < 0.8 * declared
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert line.startswith(f"warning: {path} is cut short: its header declares {declared:.2f} s, it holds {held:.2f} s")
    assert line.endswith("; transcribed what is there")
    assert read_json(out / "whole.json")["truncated"] is None
    assert "2 transcribed, 1 cut short" in result.stderr


def test_a_failed_input_outranks_a_cut_one(container: Container, tmp_path: Path) -> None:
    cut = _cut_in_data(tmp_path / "in" / "cut.wav")
    result = run(container, cut, _empty(tmp_path / "in"), "-o", tmp_path / "out", "-f", "json")
    assert result.exit_code == ExitCode.INPUTS_FAILED, result.output


# ------------------------------------------------------------------------------------------------ stdin


@pytest.mark.parametrize("name", ["a.wav", "memo.m4a"])
def test_standard_input_is_read_and_named_stdin(container: Container, tmp_path: Path, name: str) -> None:
    """Issue 21, item 7: ``app transcribe -`` reads audio piped in; its outputs are ``stdin.<format>``."""
    source = (
        wav(tmp_path / name, tone(2.0))
        if name.endswith(".wav")
        else media.kind(tmp_path / name, tone(2.0), SAMPLE_RATE, name)
    )
    out = tmp_path / "out"

    result = CliRunner().invoke(
        app,
        ["transcribe", "-", "-o", str(out), "-f", "json"],
        obj=container,
        input=source.read_bytes(),
        env={"COLUMNS": "400"},
    )

    assert result.exit_code == ExitCode.OK, result.output
    assert outputs(out) == ["stdin.json"]
    assert read_json(out / "stdin.json")["duration"] == pytest.approx(2.0, abs=0.06)


def test_standard_input_that_is_not_audio(container: Container, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["transcribe", "-", "-o", str(tmp_path / "out")],
        obj=container,
        input=b"not audio at all\n" * 50,
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == ExitCode.INPUTS_FAILED
    assert errors(result) == [f"error: cannot read audio <stdin>: {NOT_AUDIO}"]


# ------------------------------------------------------------------------------------------------ file names


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("my talk 2024.wav", "my talk 2024"),
        ("café ñandú 日本語 🎙.wav", "café ñandú 日本語 🎙"),
        ("-rf.wav", "-rf"),
        ("--help.wav", "--help"),
        ("..wav", "..wav"),  # its stem "." would name the output folder itself
        ("...wav", "...wav"),  # its stem ".." would name the output folder's parent
        ("a;b&&c|d$(e)`f`.wav", "a;b&&c|d$(e)`f`"),  # never seen by a shell
    ],
)
def test_odd_file_names_give_outputs_inside_the_output_folder(
    container: Container, tmp_path: Path, name: str, stem: str
) -> None:
    path = wav(tmp_path / "in" / name, tone(1.0))
    out = tmp_path / "work" / "out"

    result = run(container, "-o", out, "-f", "txt", "--", path)  # "--": names may start with a dash

    assert result.exit_code == ExitCode.OK, result.output
    assert outputs(out) == [f"{stem}.txt"]
    assert (out / f"{stem}.txt").read_text(encoding="utf-8") == TEXT + "\n"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]  # nothing beside the output folder


def test_names_with_leading_dashes_found_in_a_folder(container: Container, tmp_path: Path) -> None:
    wav(tmp_path / "in" / "-v.wav", tone(1.0))
    wav(tmp_path / "in" / "--overwrite" / "-o.wav", tone(1.0))
    out = tmp_path / "out"

    result = run(container, tmp_path / "in", "-o", out, "-f", "txt")

    assert result.exit_code == ExitCode.OK, result.output
    assert outputs(out) == ["--overwrite/-o.txt", "-v.txt"]


def test_a_name_with_a_dash_and_no_separator_is_a_usage_error(container: Container, tmp_path: Path) -> None:
    """Without ``--`` (or ``./``) a name like ``-rf.wav`` is an option: refused, nothing is read or written."""
    wav(tmp_path / "-rf.wav", tone(1.0))
    result = CliRunner().invoke(app, ["transcribe", "-rf.wav"], obj=container, env={"COLUMNS": "400"})
    assert result.exit_code == ExitCode.USAGE
    assert "No such option" in result.stderr


# ------------------------------------------------------------------------------------- output folder, model


@pytest.mark.parametrize("where", ["inside a file", "is a file"])
def test_an_unwritable_output_folder_exits_4(container: Container, tmp_path: Path, where: str) -> None:
    good = wav(tmp_path / "a.wav", tone(1.0))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "out" if where == "inside a file" else blocker
    message = (
        f"error: cannot write to the output folder {out}: Not a directory"
        if where == "inside a file"
        else f"error: the output folder {out} is a file; give a folder (it is created if needed)"
    )

    result = run(container, good, "-o", out)

    assert result.exit_code == ExitCode.OUTPUT_DIR
    assert result.stderr.splitlines() == [message]


def test_an_unknown_model_name_exits_3(tmp_path: Path) -> None:
    container = Container()  # the real model source, no fakes: resolving fails before anything is loaded
    container.config.cache_dir.from_value(tmp_path / "cache")
    good = wav(tmp_path / "a.wav", tone(1.0))

    result = run(container, good, "-o", tmp_path / "out", "--model", "no-such-model")

    assert result.exit_code == ExitCode.MODEL
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "error: cannot load model 'no-such-model': not a known model, an existing folder or a "
        "Hugging Face id; use 'tiny.en' (embedded)"
    )
    assert outputs(tmp_path / "out") == []


def test_a_folder_that_holds_no_model_exits_3(tmp_path: Path) -> None:
    container = Container()
    container.config.cache_dir.from_value(tmp_path / "cache")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle, never opened
    good = wav(tmp_path / "a.wav", tone(1.0))

    result = run(container, good, "-o", tmp_path / "out", "--model", tmp_path / "model")

    assert result.exit_code == ExitCode.MODEL
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: cannot load model '{tmp_path / 'model'}': {tmp_path / 'model'} holds neither")


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    """Linux names are bytes: a Latin-1 name is transcribed to the same bytes, a bad one is named (escaped) on its
    error line. A real process (``tests/e2e/slow_app.py``, never held), so that stdout and stderr are the
    interpreter's own streams."""
    folder = tmp_path / "in"
    wav(folder / "good.wav", tone(1.0))
    os.rename(folder / "good.wav", os.fsencode(folder) + b"/caf\xe9.wav")
    (Path(os.fsdecode(os.fsencode(folder) + b"/bad\xff.wav"))).write_bytes(b"junk" * 100)
    out = tmp_path / "out"

    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.slow_app", "transcribe", folder, "-o", out, "-f", "txt", "--verbose"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "SLOW_APP_MARKS": str(tmp_path)},
        capture_output=True,
        timeout=120,
    )

    assert done.returncode == ExitCode.INPUTS_FAILED, done.stderr
    assert os.listdir(os.fsencode(out)) == [b"caf\xe9.txt"]
    assert (Path(os.fsdecode(os.fsencode(out) + b"/caf\xe9.txt"))).read_text() == TEXT + "\n"
    assert b"error: cannot read audio " + os.fsencode(folder) + b"/bad\\udcff.wav: " + NOT_AUDIO.encode() in done.stderr
    assert b"hello world" in done.stdout
