"""Speech after a language change is transcribed (issue 26 item 1), by ``app transcribe --model base`` on the
synthetic espeak-ng files of ``tests/data/mixed_language`` (a sentence, 2 s of silence, a sentence in another
language), and on a two-window file joined from them. Skipped where base is not installed.

base closes the first language's sentence with a lone timestamp and says nothing of the second; the audio shows
more speech, so the rest is decoded again as a window of its own, its language detected afresh.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import BatchProgress, Decoder
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.e2e.formats import read_json

DATA = Path(__file__).resolve().parents[1] / "data" / "mixed_language"
SPANS: dict[str, list[dict[str, Any]]] = json.loads((DATA / "spans.json").read_text(encoding="utf-8"))
JOINED = ("en_fr", "en_es", "en_en")  # over 30 s: two windows
PAUSE = 1.0  # seconds of silence between the joined files


class RecordingDecoder:
    """The real decoder, each decoded window's offset and language noted."""

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner
        self.languages: list[tuple[float, str]] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def is_multilingual(self) -> bool:
        return self.inner.is_multilingual

    def check_options(self, options: TranscribeOptions) -> None:
        self.inner.check_options(options)

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        chunks = self.inner.decode_batch(windows, options, progress)
        self.languages += [(c.window.offset, c.language) for c in chunks]
        return chunks


def _base_installed() -> bool:
    from onepass_whisper.adapters.models import CachedModelSource

    return {i.name: i for i in CachedModelSource().known()}["base"].installed


def _joined(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The files of ``JOINED`` one after the other, ``PAUSE`` apart, and their sentences' spans."""
    parts, spans, at, rate = [], [], 0.0, 16_000
    for name in JOINED:
        samples, rate = sf.read(DATA / f"{name}.wav", dtype="float32")
        spans += [{**s, "start": s["start"] + at, "end": s["end"] + at} for s in SPANS[name]]
        parts += [samples, np.zeros(round(PAUSE * rate), np.float32)]
        at += (len(samples) + round(PAUSE * rate)) / rate
    path = folder / "joined.wav"
    sf.write(path, np.concatenate(parts), rate, subtype="PCM_16")
    return path, spans


@pytest.fixture(scope="module")
def base_decoder() -> Iterator[Decoder]:
    if not _base_installed():
        pytest.skip("base is not installed: app models --install base (or make models)")
    container = Container()
    container.config.model.from_value("base")
    yield container.decoder()


def transcribe(paths: Sequence[Path], out: Path, decoder: Decoder, *extra: str) -> RecordingDecoder:
    recording = RecordingDecoder(decoder)
    container = Container()
    with container.override_providers(decoder=recording):
        args = ["transcribe", *map(str, paths), "--model", "base", "-f", "json", "-o", str(out), "--quiet", *extra]
        result = CliRunner().invoke(app, args, obj=container)
    assert result.exit_code == 0, result.output
    return recording


def words_in(document: dict[str, Any], span: dict[str, Any]) -> list[str]:
    """The transcript's words whose middle lies in ``span``."""
    words = [w for s in document["segments"] for w in s["words"]]
    return [w["word"] for w in words if span["start"] <= (w["start"] + w["end"]) / 2 <= span["end"]]


def covered(document: dict[str, Any], span: dict[str, Any]) -> float:
    """The share of ``span`` that the transcript's segments cover."""
    start, end = float(span["start"]), float(span["end"])
    inside = sum(max(0.0, min(float(s["end"]), end) - max(float(s["start"]), start)) for s in document["segments"])
    return inside / (end - start)


@pytest.mark.slow
def test_every_sentence_of_every_file_is_transcribed(tmp_path: Path, base_decoder: Decoder) -> None:
    joined, joined_spans = _joined(tmp_path)
    names = sorted(SPANS)
    recording = transcribe([*(DATA / f"{n}.wav" for n in names), joined], tmp_path / "out", base_decoder)
    spans = {**SPANS, "joined": joined_spans}
    for name in [*names, "joined"]:
        document = read_json(tmp_path / "out" / f"{name}.json")
        for span in spans[name]:
            reference = len(span["text"].split())
            heard = words_in(document, span)
            assert len(heard) >= reference // 2, (name, span["language"], heard, document["text"])
            assert covered(document, span) >= 0.8, (name, span, document["segments"])
    tails = [language for offset, language in recording.languages if offset > 0 and language != "en"]
    assert {"fr", "es"} <= set(tails), recording.languages  # the tails' languages, detected afresh


@pytest.mark.slow
def test_a_forced_language_keeps_the_second_sentence(tmp_path: Path, base_decoder: Decoder) -> None:
    transcribe([DATA / "en_fr.wav"], tmp_path, base_decoder, "--language", "fr")
    document = read_json(tmp_path / "en_fr.json")
    french = SPANS["en_fr"][1]
    assert len(words_in(document, french)) >= len(french["text"].split()) // 2, document["text"]
