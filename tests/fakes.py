"""Fake adapters: the ports' behaviour without MLX, model files or audio files."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE, ChunkSegment, DecodedChunk, Waveform, Window
from onepass_whisper.domain.errors import AudioLoadError, ModelLoadError
from onepass_whisper.domain.model import TranscribeOptions, Word
from onepass_whisper.domain.ports import Aligner, AudioSource, Decoder, ModelSource


BLOCK_SECONDS = 7.0  # not a divisor of the 30-s window: windows are cut across blocks


class InMemoryAudioSource:
    """Serves waveforms by file name; any other path is a missing file."""

    def __init__(self, waveforms: Mapping[str, Waveform]) -> None:
        self.waveforms = dict(waveforms)
        self.loaded: list[Path] = []

    def load(self, path: Path) -> Waveform:
        self.loaded.append(path)
        try:
            return self.waveforms[path.name]
        except KeyError:
            raise AudioLoadError(path, "no such file") from None

    def stream(self, path: Path) -> Iterator[NDArray[np.float32]]:
        """The waveform in blocks of ``BLOCK_SECONDS``, as a file reader gives them."""
        samples = self.load(path).samples
        step = int(BLOCK_SECONDS * SAMPLE_RATE)
        for start in range(0, len(samples), step):
            yield samples[start : start + step]


class CrashingAudioSource:
    """An ``InMemoryAudioSource`` whose worker process dies (``os._exit``) while loading some files: those in
    ``crash_always`` every time, those in ``crash_once`` the first time (a marker file in ``marker_dir`` remembers
    it across processes); ``raise_always`` files raise an unexpected ``RuntimeError`` instead."""

    def __init__(
        self,
        waveforms: Mapping[str, Waveform],
        marker_dir: Path,
        crash_once: Collection[str] = (),
        crash_always: Collection[str] = (),
        raise_always: Collection[str] = (),
    ) -> None:
        self.inner = InMemoryAudioSource(waveforms)
        self.marker_dir = marker_dir
        self.crash_once = frozenset(crash_once)
        self.crash_always = frozenset(crash_always)
        self.raise_always = frozenset(raise_always)

    def load(self, path: Path) -> Waveform:
        marker = self.marker_dir / f"{path.name}.crashed"
        if path.name in self.crash_always or (path.name in self.crash_once and not marker.exists()):
            marker.touch()
            os._exit(17)  # as a segfault or the OOM killer would: no exception, no cleanup
        if path.name in self.raise_always:
            raise RuntimeError(f"unexpected failure on {path.name}")
        return self.inner.load(path)

    def stream(self, path: Path) -> Iterator[NDArray[np.float32]]:
        yield self.load(path).samples


class FakeDecoder:
    """Says ``text`` in every window that is not silent, one segment spanning the window's sound.

    Its attention is a clean diagonal, so a real aligner spreads the words evenly over the segment.
    """

    def __init__(self, text: str = "hello world", name: str = "fake", multilingual: bool = False) -> None:
        self.text = text
        self._name = name
        self._multilingual = multilingual
        self.batches: list[int] = []  # the size of every batch asked for

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_multilingual(self) -> bool:
        return self._multilingual

    def decode_batch(self, windows: Sequence[Window], options: TranscribeOptions) -> list[DecodedChunk]:
        self.batches.append(len(windows))
        return [self._chunk(window, options) for window in windows]

    def _chunk(self, window: Window, options: TranscribeOptions) -> DecodedChunk:
        words = tuple(" " + w for w in self.text.split())
        frames = window.num_frames
        silent = not np.any(np.abs(window.samples) > 1e-4) or not words
        segments = () if silent else (ChunkSegment(0.0, window.duration, " " + self.text, words, (1,) * len(words)),)
        tokens = 0 if silent else len(words)
        attention = np.full((2, tokens + 1, frames), -5.0, np.float32)  # heads × tokens × frames
        for i in range(tokens + 1):
            attention[:, i, min(frames - 1, i * frames // (tokens + 1))] = 5.0
        return DecodedChunk(
            window=window,
            language=options.language or "en",
            segments=segments,
            token_probabilities=np.full(tokens, 0.9, np.float32),
            attention=attention,
            avg_logprob=-0.2,
            compression_ratio=1.0,
            no_speech_prob=0.9 if silent else 0.01,
        )


class FakeAligner:
    """Spreads each segment's words evenly over the segment."""

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        out = []
        for segment in chunk.segments:
            n = len(segment.words)
            step = (segment.end - segment.start) / max(n, 1)
            out.append(
                tuple(
                    Word(w, segment.start + i * step, segment.start + (i + 1) * step, 0.9)
                    for i, w in enumerate(segment.words)
                )
            )
        return tuple(out)


class ProcessCrashingAligner:
    """``FakeAligner``'s words, except in a worker process, which it ends as the OOM killer would."""

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        if multiprocessing.parent_process() is not None:
            os._exit(19)
        return FakeAligner().align(chunk)


class RaisingAligner:
    """Raises ``error`` for every window (picklable: it crosses to word-timing processes)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        raise self.error


class FakeModelSource:
    """Knows a fixed set of names, each mapped to a folder."""

    def __init__(self, models: Mapping[str, Path]) -> None:
        self.models = dict(models)

    def resolve(self, name: str) -> Path:
        try:
            return self.models[name]
        except KeyError:
            raise ModelLoadError(name, "unknown model") from None


def tone(seconds: float, amplitude: float = 0.3) -> Waveform:
    """A 220 Hz tone: 'speech' to the fakes."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return Waveform((amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def _conforms() -> None:  # mypy-only; never called
    _p: Aligner = ProcessCrashingAligner()
    _r: Aligner = RaisingAligner(ValueError())
    _a: AudioSource = InMemoryAudioSource({})
    _c: AudioSource = CrashingAudioSource({}, Path("."))
    _d: Decoder = FakeDecoder()
    _l: Aligner = FakeAligner()
    _m: ModelSource = FakeModelSource({})


