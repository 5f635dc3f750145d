"""Fake adapters: the ports' behaviour without MLX, model files or audio files."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.domain.audio import (
    SAMPLE_RATE,
    CharacterRows,
    ChunkSegment,
    DecodedChunk,
    LagEvidence,
    Waveform,
    Window,
)
from onepass_whisper.domain.errors import AudioLoadError, InvalidOptionError, ModelLoadError, UnsupportedLanguageError
from onepass_whisper.domain.model import TranscribeOptions, Word
from onepass_whisper.domain.ports import (
    Aligner,
    AudioBlocks,
    AudioSource,
    BatchProgress,
    Decoder,
    LagMeasuringAligner,
    LagStore,
    ModelSource,
)

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

    Its attention is a clean diagonal, so a real aligner spreads the words evenly over the segment. With
    ``char_timing`` (as ``--char-timing`` builds the real one) each chunk also carries character rows
    (``DecodedChunk.char_rows``): a block diagonal over the words spelled one character a row, a space row between
    words, so that a word's start from them is proportional to the characters before it, not to its index (and
    its word pieces' rows are a block diagonal too, so that the two agree within the aligner's guard).
    """

    def __init__(
        self,
        text: str = "hello world",
        name: str = "fake",
        multilingual: bool = False,
        detect: Callable[[Window], tuple[str, float]] | None = None,
        avg_logprob: float = -0.2,
        char_timing: bool = False,
    ) -> None:
        """``detect``: each window's detected language and its probability (a multilingual model's, where no
        language is given); ``avg_logprob``: every window's score; ``char_timing``: character rows with each
        chunk where words are timed."""
        self.text = text
        self._name = name
        self._multilingual = multilingual
        self.detect = detect
        self.avg_logprob = avg_logprob
        self.char_timing = char_timing
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
        if self.char_timing:  # the word pieces' rows as blocks too: their DTW starts lie near the characters'
            attention = block_diagonal(tokens + 1, frames)
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
            char_rows=char_rows(words, frames) if self.char_timing and options.word_timestamps and tokens else None,
        )


def char_rows(words: Sequence[str], frames: int) -> tuple[CharacterRows, ...]:
    """``words`` spelled one character a row, a space row between words, and a last row: a clean block diagonal
    over ``frames`` (the fake decoder's character rows)."""
    firsts, rows = [], 0
    for i, word in enumerate(words):
        rows += 1 if i else 0
        firsts.append(rows)
        rows += len(word.strip())
    return (CharacterRows(0, np.array(firsts), block_diagonal(rows + 1, frames)),)


def block_diagonal(rows: int, frames: int) -> NDArray[np.float32]:
    """Attention (2 heads × ``rows`` × ``frames``) where each row holds its own block of frames, in order: DTW reaches
    row ``i`` at frame ``i * frames // rows``."""
    attention = np.full((2, rows, frames), -5.0, np.float32)
    for i in range(rows):
        attention[:, i, i * frames // rows : max(i * frames // rows + 1, (i + 1) * frames // rows)] = 5.0
    return attention


class LanguageSwitchingDecoder(FakeDecoder):
    """Hears a tone's pitch as its language (``PITCHES``), as base hears a language change: it detects a window's
    language from its first sound (unless one is forced), says its word once a second of each burst (a segment each)
    and stops with a lone timestamp (``speech_ended``) at the first burst in another language, which it leaves
    undecoded.

    Records each batch's windows (source, offset) and each window's language.
    """

    PITCHES = {220: ("en", " hello"), 330: ("fr", " bonjour")}  # Hz: language, the word it says

    def __init__(self) -> None:
        super().__init__(multilingual=True)
        self.windows: list[list[tuple[int, float]]] = []
        self.languages: list[str] = []

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.windows.append([(w.source, w.offset) for w in windows])
        return super().decode_batch(windows, options, progress)

    def _chunk(self, window: Window, options: TranscribeOptions) -> DecodedChunk:
        bursts = self.bursts(window.samples)
        heard = []
        for start, end, pitch in bursts:
            if pitch != bursts[0][2]:
                break
            words = (self.PITCHES[pitch][1],) * max(1, round(end - start))  # a word a second
            heard.append(ChunkSegment(start, end, "".join(words), words, (1,) * len(words)))
        language = options.language or (self.PITCHES[bursts[0][2]][0] if bursts else "en")
        self.languages.append(language)
        tokens = sum(len(segment.words) for segment in heard)
        attention = np.full((2, tokens + 1, window.num_frames), -5.0, np.float32)  # heads × tokens × frames
        attention[:, :, -1] = 5.0  # (FakeAligner spreads the words; a real aligner would see no diagonal)
        return DecodedChunk(
            window=window,
            language=language,
            segments=heard,
            token_probabilities=np.full(tokens, 0.9, np.float32),
            attention=attention,
            avg_logprob=-0.2,
            compression_ratio=1.0,
            no_speech_prob=0.01 if heard else 0.9,
            speech_ended=True,
        )

    @classmethod
    def bursts(cls, samples: NDArray[np.float32]) -> list[tuple[float, float, int]]:
        """(start, end, pitch in Hz) of each run of 100 ms blocks of one pitch (zero crossings) and some sound."""
        block = SAMPLE_RATE // 10
        runs: list[tuple[float, float, int]] = []
        for first in range(0, len(samples) - block + 1, block):
            part = samples[first : first + block]
            if np.sqrt(np.mean(part.astype(np.float64) ** 2)) < 1e-2:
                continue
            crossings = np.count_nonzero(np.diff(np.signbit(part)))
            pitch = min(cls.PITCHES, key=lambda hz: abs(hz - crossings * 5))  # crossings in 0.1 s = 2 × 0.1 × Hz
            start, end = first / SAMPLE_RATE, (first + block) / SAMPLE_RATE
            if runs and runs[-1][2] == pitch and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end, pitch)
            else:
                runs.append((start, end, pitch))
        return runs


def pitched(*parts: tuple[float, int]) -> Waveform:
    """Tones and pauses one after the other: (seconds, Hz; 0 Hz for silence), amplitude 0.3."""
    pieces = []
    for seconds, hz in parts:
        t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        pieces.append(0.3 * np.sin(2 * np.pi * hz * t) if hz else np.zeros(len(t)))
    return Waveform(np.concatenate(pieces).astype(np.float32))


class FakeAligner:
    """Spreads each segment's words evenly over the segment; ``lag`` seconds earlier where given."""

    def __init__(self, lag: float = 0.0) -> None:
        self.lag = lag

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        out = []
        for segment in chunk.segments:
            n = len(segment.words)
            step = (segment.end - segment.start) / max(n, 1)
            out.append(
                tuple(
                    Word(w, segment.start + i * step - self.lag, segment.start + (i + 1) * step - self.lag, 0.9)
                    for i, w in enumerate(segment.words)
                )
            )
        return tuple(out)


class FakeLagAligner(FakeAligner):
    """A ``LagMeasuringAligner``: each measured window with words gives ``per_window`` boundaries of evidence, and
    evidence of at least ``enough`` boundaries estimates a lag of ``seconds_per_boundary`` times their number (so
    that a test sees which evidence a lag came from); ``with_lag`` gives ``FakeAligner(lag)``."""

    def __init__(self, per_window: int = 4, enough: int = 10, seconds_per_boundary: float = 0.001) -> None:
        super().__init__()
        self.per_window = per_window
        self.enough = enough
        self.seconds_per_boundary = seconds_per_boundary
        self.measured = 0
        self._lock = threading.Lock()

    def measure(self, chunk: DecodedChunk) -> tuple[DecodedChunk, LagEvidence]:
        with self._lock:
            self.measured += 1
        if not chunk.segments:
            return chunk, LagEvidence()
        return chunk, LagEvidence(np.linspace(0.1, 0.9, self.per_window), np.zeros(100))

    def estimate_lag(self, evidence: Sequence[LagEvidence]) -> float | None:
        boundaries = sum(e.boundaries for e in evidence)
        return boundaries * self.seconds_per_boundary if boundaries >= self.enough else None

    def with_lag(self, lag: float) -> Aligner:
        return FakeAligner(lag)


class FakeLagStore:
    """A ``LagStore`` in memory; ``saved``: every ``save`` call's (lag, boundaries)."""

    def __init__(self, lag: float | None = None, boundaries: int = 0) -> None:
        self.kept = None if lag is None else (lag, boundaries)
        self.saved: list[tuple[float, int]] = []

    def load(self) -> float | None:
        return None if self.kept is None else self.kept[0]

    def save(self, lag: float, boundaries: int) -> None:
        self.saved.append((lag, boundaries))
        if self.kept is None or boundaries > self.kept[1]:
            self.kept = (lag, boundaries)


class RegionDecoder:
    """One segment per stretch of sound in a window (stretches apart by at least ``pause`` seconds of digital
    silence), saying ``w<amplitude in thousandths>`` of that stretch: a packed window's parts come back as separate
    segments, each labelled by the request it came from. ``spill`` seconds widen each segment into the silence on
    both sides (timestamps late or early); ``stop_after`` ends a sequence after that many segments (a model that
    stops early). Every batch's windows are recorded as (source, index, seconds)."""

    def __init__(self, spill: float = 0.0, stop_after: int | None = None, pause: float = 0.5) -> None:
        self.spill = spill
        self.stop_after = stop_after
        self.pause = pause
        self.batches: list[list[tuple[int, int, float]]] = []

    @property
    def name(self) -> str:
        return "regions"

    @property
    def is_multilingual(self) -> bool:
        return False

    def check_options(self, options: TranscribeOptions) -> None:
        """Takes any options."""

    def regions(self, samples: NDArray[np.float32]) -> list[tuple[int, int]]:
        """(first, end) sample indices of each stretch of sound."""
        loud = np.flatnonzero(np.abs(samples) > 1e-4)
        if not loud.size:
            return []
        breaks = np.flatnonzero(np.diff(loud) > self.pause * SAMPLE_RATE)
        firsts = [int(loud[0]), *(int(loud[b + 1]) for b in breaks)]
        ends = [*(int(loud[b]) + 1 for b in breaks), int(loud[-1]) + 1]
        return list(zip(firsts, ends))

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.batches.append([(w.source, w.index, w.duration) for w in windows])
        return [self._chunk(window, options) for window in windows]

    def _chunk(self, window: Window, options: TranscribeOptions) -> DecodedChunk:
        segments = []
        for first, end in self.regions(window.samples)[: self.stop_after]:
            label = f" w{round(float(np.abs(window.samples[first:end]).max()) * 1000)}"
            start = max(first / SAMPLE_RATE - self.spill, 0.0)
            segments.append(
                ChunkSegment(start, min(end / SAMPLE_RATE + self.spill, window.duration), label, (label,), (1,))
            )
        frames, tokens = window.num_frames, len(segments)
        return DecodedChunk(
            window=window,
            language=options.language or "en",
            segments=tuple(segments),
            token_probabilities=np.full(tokens, 0.9, np.float32),
            attention=np.zeros((1, tokens + 1, frames), np.float32),
            avg_logprob=-0.2,
            compression_ratio=1.0,
            no_speech_prob=0.01 if segments else 0.9,
        )


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
    _lag: LagMeasuringAligner = FakeLagAligner()
    _store: LagStore = FakeLagStore()
    _p: Aligner = ProcessCrashingAligner()
    _r: Aligner = RaisingAligner(ValueError())
    _a: AudioSource = InMemoryAudioSource({})
    _c: AudioSource = CrashingAudioSource({}, Path("."))
    _d: Decoder = FakeDecoder()
    _l: Aligner = FakeAligner()
    _m: ModelSource = FakeModelSource({})
    _b: Decoder = LabelDecoder()
    _s: Decoder = LanguageSwitchingDecoder()


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
