"""The bad-input cases that need the real model (issue #8): what tiny.en makes of silence, white noise, clipping,
other sample rates and 10 ms of audio, through ``app transcribe`` on real files.

Issue 21 adds what people have (a voice memo, a video, a browser recording: read as well as the WAV), a WAV cut
short (transcribed as far as it goes, marked), a video without sound and a memo cut before its index (each one
error line; the run exits 1). One run of the command over one folder (module fixture: the windows of all cases share batches, the model is
loaded once) feeds every check. No invented words: 60 s of digital silence and 60 s of white noise must give an
empty or near-empty transcript (at most one word per 30-s window), through the no-speech and hallucination rules.
The other cases must still read the bundled sample about as well as the 16 kHz original (``MAX_WER`` in
``tests/e2e/test_cli_real.py``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
from numpy.typing import NDArray
from typer.testing import CliRunner, Result

from onepass_whisper.adapters.av_audio import NO_AUDIO_STREAM
from onepass_whisper.adapters.models import CachedModelSource
from onepass_whisper.domain.audio import SAMPLE_RATE
from onepass_whisper.domain.ports import Decoder
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.exit_codes import ExitCode
from tests import media
from tests.e2e.formats import check_json_schema, read_json

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.wav"
REFERENCE = REPO / "samples" / "sample.txt"
MAX_WER = 0.15  # as for the 16 kHz sample itself
MAX_WER_8K = 0.5  # 8 kHz keeps nothing above 4 kHz: measured 0.36 (the first sentence is skipped; see docs)
WORDS_PER_WINDOW = 1  # "near-empty": at most this many words per 30-s window of silence or noise


def _speech() -> NDArray[np.float32]:
    data, rate = sf.read(SAMPLE, dtype="float32")
    samples = np.asarray(data, dtype=np.float32)
    assert rate == SAMPLE_RATE and samples.ndim == 1
    return samples


def _at(rate: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        sf.write(path, soxr.resample(_speech(), SAMPLE_RATE, rate), rate, subtype="PCM_16")

    return write


CASES: dict[str, Callable[[Path], object]] = {
    "silence": lambda p: sf.write(p, np.zeros(60 * SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16"),
    "white noise": lambda p: sf.write(
        p, np.random.default_rng(0).uniform(-0.5, 0.5, 60 * SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16"
    ),
    "clipped": lambda p: sf.write(p, np.clip(_speech() * 20.0, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16"),
    "8 kHz": _at(8_000),
    "22.05 kHz": _at(22_050),
    "44.1 kHz": _at(44_100),
    "48 kHz": _at(48_000),
    "10 ms": lambda p: sf.write(p, _speech()[8_000:8_160], SAMPLE_RATE, subtype="PCM_16"),
    # issue 21: what people have (written with PyAV), a file cut short, a silent video, a memo cut before its index
    "voice memo": lambda p: media.kind(p, _speech(), SAMPLE_RATE, "memo.m4a"),
    "video": lambda p: media.kind(p, _speech(), SAMPLE_RATE, "clip.mp4"),
    "browser recording": lambda p: media.kind(p, _speech(), SAMPLE_RATE, "voice.webm"),
    "cut short": lambda p: _cut_wav(p),
    "video without sound": lambda p: media.silent_video(p),
    "memo cut before its index": lambda p: media.cut(media.kind(p, _speech(), SAMPLE_RATE, "memo.m4a"), 0.5),
}
SUFFIXES = {
    "voice memo": ".m4a",
    "video": ".mp4",
    "browser recording": ".webm",
    "video without sound": ".mp4",
    "memo cut before its index": ".m4a",
}
FAILING = {  # case: the reason on its error line
    "video without sound": NO_AUDIO_STREAM,
    "memo cut before its index": "corrupt or truncated audio (an MP4/M4A file without its index: cut short before "
    "it was finished?)",
}
CUT_AT = 0.4  # of the sample's bytes


def _cut_wav(path: Path) -> None:
    sf.write(path, _speech(), SAMPLE_RATE, subtype="PCM_16")
    media.cut(path, CUT_AT)


def file_name(case: str) -> str:
    return case.replace(" ", "_").replace(".", "_") + SUFFIXES.get(case, ".wav")


def json_name(case: str) -> str:
    return Path(file_name(case)).stem + ".json"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_en: Decoder) -> Iterator[tuple[Result, Path]]:
    if not SAMPLE.is_file() or not REFERENCE.is_file():
        pytest.skip(f"the bundled sample is missing: {SAMPLE.relative_to(REPO)} and {REFERENCE.relative_to(REPO)}")
    folder, out = tmp_path_factory.mktemp("in"), tmp_path_factory.mktemp("out")
    for case, write in CASES.items():
        write(folder / file_name(case))
    container = Container()
    with container.override_providers(decoder=tiny_en):  # the real audio reader and aligner
        result = CliRunner().invoke(app, ["transcribe", str(folder), "-o", str(out), "-f", "json"], obj=container)
    yield result, out


def document(run: tuple[Result, Path], case: str) -> Any:
    found = read_json(run[1] / json_name(case))
    check_json_schema(found)
    return found


def words(found: Any) -> list[str]:
    return [w["word"] for segment in found["segments"] for w in segment["words"]]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower().replace("-", " ")).split())


def test_every_readable_case_is_transcribed_and_each_bad_one_named(run: tuple[Result, Path]) -> None:
    result, out = run
    assert result.exit_code == ExitCode.INPUTS_FAILED, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(json_name(c) for c in CASES if c not in FAILING)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(FAILING), errors
    for case, reason in FAILING.items():
        assert any(
            line.startswith("error: cannot read audio ") and line.endswith(f"/{file_name(case)}: {reason}")
            for line in errors
        ), (case, errors)


def test_a_file_cut_short_is_transcribed_as_far_as_it_goes_and_marked(run: tuple[Result, Path]) -> None:
    found = document(run, "cut short")
    whole = len(_speech()) / SAMPLE_RATE
    assert found["truncated"]["expected_duration"] == pytest.approx(whole, abs=1e-3)
    assert found["duration"] == pytest.approx(whole * CUT_AT, abs=0.05)
    assert len(words(found)) >= 8, found["text"]  # the first sentences are there
    warning = [line for line in run[0].stderr.splitlines() if line.startswith("warning:") and "cut short" in line]
    assert len(warning) == 1 and file_name("cut short") in warning[0] and f"{whole:.2f} s" in warning[0]


def test_silence_invents_no_words(run: tuple[Result, Path]) -> None:
    found = document(run, "silence")
    assert words(found) == [] and found["segments"] == [], found["text"]  # application.no_speech
    assert found["doubts"] == [{"kind": "no_speech", "score": None}]
    said = [line for line in run[0].stderr.splitlines() if line.startswith("warning:") and "no speech found" in line]
    assert any(file_name("silence") in line for line in said), said  # and the exit code stays (the run's own test)


def test_white_noise_invents_no_words(run: tuple[Result, Path]) -> None:
    found = document(run, "white noise")
    assert words(found) == [], found["text"]
    assert found["duration"] == 60.0


def test_10_ms_gives_at_most_a_word_inside_it(run: tuple[Result, Path]) -> None:
    found = document(run, "10 ms")
    assert found["duration"] == 0.01
    assert words(found) == [], found["text"]  # once " you" (application.no_speech)


@pytest.mark.parametrize(
    "case", ["clipped", "22.05 kHz", "44.1 kHz", "48 kHz", "8 kHz", "voice memo", "video", "browser recording"]
)
def test_speech_is_read_whatever_its_rate_or_clipping(run: tuple[Result, Path], case: str) -> None:
    found = document(run, case)
    lossy = 0.06 if case in SUFFIXES else 1e-3  # AAC and Opus frames pad the end
    assert found["duration"] == pytest.approx(len(_speech()) / SAMPLE_RATE, abs=lossy)
    error_rate = jiwer.wer(normalise(REFERENCE.read_text(encoding="utf-8")), normalise(found["text"]))
    assert error_rate <= (MAX_WER_8K if case == "8 kHz" else MAX_WER), (error_rate, found["text"])
    starts = [word["start"] for segment in found["segments"] for word in segment["words"]]
    assert starts == sorted(starts) and all(0.0 <= s <= found["duration"] for s in starts)


@pytest.mark.parametrize("damage", ["weights cut in half", "config missing", "only a dead conversion's scratch"])
def test_a_half_converted_tiny_en_cache_is_detected_and_rebuilt(
    tiny_en_folder: Path, tmp_path: Path, damage: str
) -> None:
    """The real embedded model's cache entry, damaged as a conversion killed half-way would leave it."""
    cache = tmp_path / "cache"
    entry = cache / tiny_en_folder.name
    shutil.copytree(tiny_en_folder, entry)
    good = (tiny_en_folder / "weights.safetensors").read_bytes()
    if damage == "weights cut in half":
        (entry / "weights.safetensors").write_bytes(good[: len(good) // 2])
    elif damage == "config missing":
        (entry / "config.json").unlink()
    else:
        shutil.rmtree(entry)
        (cache / ".tmp-dead").mkdir()
        (cache / ".tmp-dead" / "weights.safetensors").write_bytes(good[:1000])

    assert CachedModelSource(cache).resolve("tiny.en") == entry
    assert (entry / "weights.safetensors").read_bytes() == good
    assert sorted(p.name for p in entry.iterdir()) == sorted(p.name for p in tiny_en_folder.iterdir())
