"""The bad-input cases that need the real model (issue #8): what tiny.en makes of silence, white noise, clipping,
other sample rates and 10 ms of audio, through ``app transcribe`` on real files.

One run of the command over one folder (module fixture: the windows of all cases share batches, the model is
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

from onepass_whisper.adapters.models import CachedModelSource
from onepass_whisper.domain.audio import SAMPLE_RATE
from onepass_whisper.domain.ports import Decoder
from onepass_whisper.entrypoints.cli import ExitCode, app
from onepass_whisper.entrypoints.container import Container
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


CASES: dict[str, Callable[[Path], None]] = {
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
}


def file_name(case: str) -> str:
    return case.replace(" ", "_").replace(".", "_") + ".wav"


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
    found = read_json(run[1] / file_name(case).replace(".wav", ".json"))
    check_json_schema(found)
    return found


def words(found: Any) -> list[str]:
    return [w["word"] for segment in found["segments"] for w in segment["words"]]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower().replace("-", " ")).split())


def test_every_case_is_transcribed_and_the_run_succeeds(run: tuple[Result, Path]) -> None:
    result, out = run
    assert result.exit_code == ExitCode.OK, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(file_name(c).replace(".wav", ".json") for c in CASES)


def test_silence_invents_no_words(run: tuple[Result, Path]) -> None:
    found = document(run, "silence")
    assert len(words(found)) <= WORDS_PER_WINDOW * 2, found["text"]


def test_white_noise_invents_no_words(run: tuple[Result, Path]) -> None:
    found = document(run, "white noise")
    assert len(words(found)) <= WORDS_PER_WINDOW * 2, found["text"]
    assert found["duration"] == 60.0


def test_10_ms_gives_at_most_a_word_inside_it(run: tuple[Result, Path]) -> None:
    found = document(run, "10 ms")
    assert found["duration"] == 0.01
    assert len(words(found)) <= WORDS_PER_WINDOW
    assert all(0.0 <= w["start"] <= w["end"] <= 0.01 for s in found["segments"] for w in s["words"])


@pytest.mark.parametrize("case", ["clipped", "22.05 kHz", "44.1 kHz", "48 kHz", "8 kHz"])
def test_speech_is_read_whatever_its_rate_or_clipping(run: tuple[Result, Path], case: str) -> None:
    found = document(run, case)
    assert found["duration"] == pytest.approx(len(_speech()) / SAMPLE_RATE, abs=1e-3)
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
