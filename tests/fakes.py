"""Fake adapters: the ports' behaviour without MLX, model files or audio files."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from onepass_whisper.domain.audio import SAMPLE_RATE, ChunkSegment, DecodedChunk, Waveform, Window
from onepass_whisper.domain.errors import AudioLoadError, InvalidOptionError, ModelLoadError, UnsupportedLanguageError
from onepass_whisper.domain.model import TranscribeOptions, Word
from onepass_whisper.domain.ports import Aligner, AudioBlocks, AudioSource, BatchProgress, Decoder, ModelSource

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

    def stream(self, path: Path) -> AudioBlocks:
        """The waveform in blocks of ``BLOCK_SECONDS``, as a file reader gives them; then its ``truncated``."""
        waveform = self.load(path)
        step = int(BLOCK_SECONDS * SAMPLE_RATE)
        for start in range(0, len(waveform.samples), step):
            yield waveform.samples[start : start + step]
        return waveform.truncated


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

    def stream(self, path: Path) -> AudioBlocks:
        waveform = self.load(path)
        yield waveform.samples
        return waveform.truncated


class FakeDecoder:
    """Says ``text`` in every window that is not silent, one segment spanning the window's sound.

    Its attention is a clean diagonal, so a real aligner spreads the words evenly over the segment.
    """

    def __init__(
        self,
        text: str = "hello world",
        name: str = "fake",
        multilingual: bool = False,
        detect: Callable[[Window], tuple[str, float]] | None = None,
        avg_logprob: float = -0.2,
    ) -> None:
        """``detect``: each window's detected language and its probability (a multilingual model's, where no
        language is given); ``avg_logprob``: every window's score."""
        self.text = text
        self._name = name
        self._multilingual = multilingual
        self.detect = detect
        self.avg_logprob = avg_logprob
        self.batches: list[int] = []  # the size of every batch asked for

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_multilingual(self) -> bool:
        return self._multilingual

    def check_options(self, options: TranscribeOptions) -> None:
        """Refuses what an English-only model refuses (a multilingual fake takes any language)."""
        if self._multilingual:
            return
        if options.task == "translate":
            raise InvalidOptionError("task", f"translate needs a multilingual model; {self._name} is English-only")
        if options.language not in (None, "en", "english"):
            raise UnsupportedLanguageError(str(options.language), f"{self._name} is an English-only model")

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.batches.append(len(windows))
        chunks = []
        for number, window in enumerate(windows, 1):  # one sequence after the other, each reported as it finishes
            chunks.append(self._chunk(window, options))
            if progress is not None:
                progress(number / len(windows))
        return chunks

    def _chunk(self, window: Window, options: TranscribeOptions) -> DecodedChunk:
        words = tuple(" " + w for w in self.text.split())
        frames = window.num_frames
        silent = not np.any(np.abs(window.samples) > 1e-4) or not words
        segments = () if silent else (ChunkSegment(0.0, window.duration, " " + self.text, words, (1,) * len(words)),)
        tokens = 0 if silent else len(words)
        attention = np.full((2, tokens + 1, frames), -5.0, np.float32)  # heads × tokens × frames
        for i in range(tokens + 1):
            attention[:, i, min(frames - 1, i * frames // (tokens + 1))] = 5.0
        language, probability = options.language or "en", None
        if self.detect is not None and options.language is None:
            language, probability = self.detect(window)
        return DecodedChunk(
            window=window,
            language=language,
            language_probability=probability,
            segments=segments,
            token_probabilities=np.full(tokens, 0.9, np.float32),
            attention=attention,
            avg_logprob=self.avg_logprob,
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
    _b: Decoder = LabelDecoder()


class LabelDecoder:
    """Says one word per window, ``w<amplitude in thousandths>``: each input's loudness labels its words, so a test
    sees which input a word came from. Every batch's windows are recorded; ``gate`` (when given) holds each batch
    until set; a window of amplitude ``fail_amplitude`` makes its whole batch raise ``RuntimeError``."""

    def __init__(self, gate: threading.Event | None = None, fail_amplitude: float | None = None) -> None:
        self.gate = gate
        self.fail_amplitude = fail_amplitude
        self.batches: list[list[tuple[int, int]]] = []  # per batch: (source, index) of each window
        self.entered = threading.Event()  # set once a batch has started

    @property
    def name(self) -> str:
        return "label"

    @property
    def is_multilingual(self) -> bool:
        return False

    @staticmethod
    def label(window: Window) -> str:
        return f"w{round(float(np.abs(window.samples).max()) * 1000)}"

    def check_options(self, options: TranscribeOptions) -> None:
        """Takes any options: the scheduler's tests are about batches, not about what a model refuses."""

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10.0)
        self.batches.append([(w.source, w.index) for w in windows])
        if self.fail_amplitude is not None and any(
            abs(float(np.abs(w.samples).max()) - self.fail_amplitude) < 1e-3 for w in windows
        ):
            raise RuntimeError("decoder failed on a window")
        return [FakeDecoder(self.label(w))._chunk(w, options) for w in windows]
