"""The use case: transcribe many inputs, their windows sharing decoder batches, with word times from one pass."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from itertools import islice
from pathlib import Path

import numpy as np
from attrs import define, field, frozen
from numpy.typing import NDArray

from onepass_whisper.application.no_speech import speech_only
from onepass_whisper.application.run_lag import MeasuredWindow, RunLag, done, measure_window, time_measured
from onepass_whisper.application.word_timing import (
    WordTiming,
    default_align_workers,
    timed_segments,
    transcript_of_windows,
)
from onepass_whisper.domain.audio import SAMPLE_RATE, DecodedChunk, Truncation, Waveform, Window, finite_samples
from onepass_whisper.domain.decoding import settle_tail, timed_at_once
from onepass_whisper.domain.errors import AudioLoadError, TranscriptionError
from onepass_whisper.domain.model import Segment, TranscribeOptions, Transcript
from onepass_whisper.domain.ports import (
    AheadDecoder,
    Aligner,
    AudioBlocks,
    AudioSource,
    Decoder,
    LagMeasuringAligner,
    LagStore,
    ProgressSink,
)
from onepass_whisper.domain.windowing import stream_windows

_Input = tuple[Path | str, Waveform | None]  # a file to read, or samples already in memory


def _no_progress(done: float, total: int) -> None:
    """The default progress sink: says nothing."""


@frozen
class FileResult:
    """One input's outcome: a transcript or the error that stopped it (never both)."""

    source: Path | str
    transcript: Transcript | None = None
    error: TranscriptionError | None = None


@define
class _Pending:
    """An input being read, cut into windows and decoded; each decoded window's words are timed in the background."""

    source: Path | str
    samples: int = 0  # read so far
    reading: bool = True
    windows_left: int = 0  # cut but not yet decoded
    first_language: str | None = None
    timed: list[tuple[float, Future[list[Segment]]]] = field(factory=list)  # (window offset, its segments)
    measured: list[MeasuredWindow] = field(factory=list)  # with a lag to estimate: windows to time once it is known
    truncated: Truncation | None = None  # known once the input is read to its end

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE

    def decoded(self) -> bool:
        return not self.reading and self.windows_left == 0

    def count(self, blocks: AudioBlocks) -> Iterator[NDArray[np.float32]]:
        """``blocks`` made finite, their samples counted as they pass; their end's ``Truncation`` kept."""
        while True:
            try:
                block = next(blocks)
            except StopIteration as end:
                self.truncated = end.value
                return
            self.samples += len(block)
            yield finite_samples(block)


@define
class TranscriptionService:
    audio: AudioSource
    decoder: Decoder
    aligner: Aligner
    batch_size: int = 16
    align_workers: int = field(factory=default_align_workers)  # word timing overlaps the next batch's decoding
    # worker processes for word timing from the second batch on (0: threads only); the composition root chooses
    align_processes: int = 0
    # a first batch of at least this many windows starts the processes at once (``WordTiming``); None: the second
    align_processes_first_batch: int | None = None
    # the progress sink hears of a batch's decoding at most this often (seconds): a decoder reports every step
    progress_interval: float = 0.1
    # where an aligner that estimates the model's lag (``LagMeasuringAligner``) keeps it between runs
    lag_store: LagStore | None = None

    def transcribe(self, path: Path, options: TranscribeOptions) -> Transcript:
        """One file; raises the ``TranscriptionError`` that stopped it."""
        return _unwrap(next(self.transcribe_many([path], options)))

    def transcribe_waveform(self, waveform: Waveform, options: TranscribeOptions, name: str = "<array>") -> Transcript:
        """Samples already in memory (16 kHz mono float32)."""
        return _unwrap(next(self._run([(name, waveform)], options, _no_progress)))

    def transcribe_many(
        self, paths: Sequence[Path], options: TranscribeOptions, progress: ProgressSink = _no_progress
    ) -> Iterator[FileResult]:
        """Yield each input's result as soon as its last window is decoded; a bad input never stops the others.

        Windows of consecutive inputs share batches. Inputs are read lazily, only as far as the next batch needs.
        """
        return self._run(((path, None) for path in paths), options, progress)

    def _run(
        self,
        inputs: Iterator[_Input] | list[_Input],
        options: TranscribeOptions,
        progress: ProgressSink,
    ) -> Iterator[FileResult]:
        with WordTiming(
            self.aligner, self.align_workers, self.align_processes, self.align_processes_first_batch
        ) as timing:
            lag = None
            if isinstance(self.aligner, LagMeasuringAligner) and options.word_timestamps:
                lag = RunLag(self.aligner, self.lag_store)
            yield from _Pipeline(self, options, progress, timing, enumerate(inputs), lag).results()


@define
class _Pipeline:
    """One run of the service: inputs read and cut into windows as far as the next batch needs, batch after batch
    decoded, each decoded window routed to its input (its words timed on ``timing``'s pool while the next batch
    decodes), and each input finished once its last window is decoded and timed.

    A window's captured attention lives only until its words are timed. Inputs are yielded in the order their last
    windows finish.
    """

    service: TranscriptionService
    options: TranscribeOptions
    progress: ProgressSink
    timing: WordTiming
    inputs: Iterator[tuple[int, _Input]]  # numbered: a window's ``source`` is its input's number
    lag: RunLag | None = None  # the lag chain, where the aligner estimates the model's lag
    held: list[_Pending] = field(factory=list)  # decoded inputs waiting for the run's lag (``run_lag.py``)
    queue: deque[Window] = field(factory=deque)  # cut, waiting for a batch; a window's undecoded tail goes first
    pending: dict[int, _Pending] = field(factory=dict)  # inputs with windows still to cut or to decode
    reading: tuple[int, Iterator[tuple[Window, bool]]] | None = None  # the input being cut into windows
    done: int = 0  # windows decoded
    total: int = 0  # windows cut so far (tails included)

    def results(self) -> Iterator[FileResult]:
        decoder = self.service.decoder
        ahead = decoder if isinstance(decoder, AheadDecoder) and decoder.encodes_ahead else None
        size = self.service.batch_size
        while True:
            # with a decoder that encodes ahead, the next batch is cut too, so its encoder runs beside this decoding
            yield from self._read_windows(size if ahead is None else 2 * size)
            if not self.queue:
                break
            batch = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
            if ahead is not None and self.queue:
                ahead.encode_ahead(list(islice(self.queue, size)), self.options)
            self._decode_batch(batch)
            # an input is yielded once its last window is decoded and timed: waiting here costs only the timing of
            # its last windows (the timing of unfinished inputs' windows goes on beside the next batch)
            for entry in self._count_decoded(batch):
                yield from self._lag_known(entry)
        if self.lag is not None:  # the inputs held for the run's lag get what the run's evidence gives
            yield from self._release(self.lag.at_end())

    def _lag_known(self, entry: _Pending) -> Iterator[FileResult]:
        """Finish a decoded input, or hold it until the run's lag is known; with it, the inputs held before."""
        if self.lag is None:
            yield self._finish_file(entry)
            return
        lag = self.lag.of_file([window.evidence for window in entry.measured])
        if lag is None:
            self.held.append(entry)
            return
        if self.held and self.lag.fixed is not None:
            yield from self._release(self.lag.fixed)
        self._time_measured(entry, lag)
        yield self._finish_file(entry)

    def _release(self, lag: float) -> Iterator[FileResult]:
        """Time and finish the held inputs with the run's ``lag``."""
        held, self.held = self.held, []
        for entry in held:
            self._time_measured(entry, lag)
        for entry in held:
            yield self._finish_file(entry)

    def _time_measured(self, entry: _Pending, lag: float) -> None:
        """The second phase: an input's measured windows timed with ``lag`` (on the pool)."""
        assert self.lag is not None
        time_measured(entry.measured, self.timing, self.lag.timing(lag))
        entry.measured = []

    def _read_windows(self, wanted: int) -> Iterator[FileResult]:
        """Cut windows until the queue holds ``wanted`` or the inputs end; an input that cannot be read is yielded
        as its error, and what was cut of it is dropped."""
        while len(self.queue) < wanted:
            if self.reading is None and not self._open_next():
                return
            assert self.reading is not None
            number, windows = self.reading
            entry = self.pending[number]
            try:
                window, last = next(windows)
            except StopIteration:  # not one window: no samples
                yield self._drop(number, AudioLoadError(str(entry.source), "no samples"))
                continue
            except AudioLoadError as exc:  # unreadable, at once or part-way
                yield self._drop(number, exc)
                continue
            if last:  # known at once, so that the input is done as soon as its last window is decoded
                self.reading, entry.reading = None, False
            self._enqueue(window, entry)
            self.progress(self.done, self.total)

    def _open_next(self) -> bool:
        """Start reading the next input; False when there is none."""
        try:
            number, (source, waveform) = next(self.inputs)
        except StopIteration:
            return False
        entry = self.pending[number] = _Pending(source)
        if waveform is None:
            assert isinstance(source, Path)
            blocks = self.service.audio.stream(source)
        else:
            blocks = _blocks_of(waveform)
        self.reading = number, _marking_last(stream_windows(entry.count(blocks), source=number))
        return True

    def _drop(self, number: int, error: AudioLoadError) -> FileResult:
        """Input ``number`` failed while being read: forget it and its windows not yet decoded."""
        self.reading = None
        entry = self.pending.pop(number)
        self.queue = deque(w for w in self.queue if w.source != number)
        return FileResult(entry.source, error=error)

    def _enqueue(self, window: Window, entry: _Pending, *, first: bool = False) -> None:
        if first:
            self.queue.appendleft(window)
        else:
            self.queue.append(window)
        entry.windows_left += 1
        self.total += 1

    def _decode_batch(self, batch: list[Window]) -> None:
        self.timing.batch_started(len(batch))
        within = _BatchProgress(self.progress, self.done, len(batch), self.total, self.service.progress_interval)
        for decoded in self.service.decoder.decode_batch(batch, self.options, within):
            self._route(speech_only(decoded, self.options))

    def _route(self, chunk: DecodedChunk) -> None:
        """A decoded window to its input: its words timed (in the background, unless the window may have an undecoded
        tail, which starts after its last word, or is one, whose first segment is checked: ``domain/decoding.py``),
        the tail queued to be decoded again, first thing in the next batch. Where the aligner estimates the model's
        lag, the window is measured instead, and timed once its input's lag is known (``_lag_known``)."""
        entry = self.pending[chunk.window.source]
        entry.first_language = entry.first_language or chunk.language
        if self.lag is not None:
            window, rest = measure_window(self.lag, self.timing, chunk)
            entry.measured.append(window)
            entry.timed.append((window.offset, window.timed))
            if rest is not None:
                self._enqueue(rest, entry, first=True)
            return
        if not timed_at_once(chunk):
            entry.timed.append((chunk.window.offset, self.timing.submit(chunk, self.options.word_timestamps)))
            return
        segments, rest = settle_tail(chunk, timed_segments(self.service.aligner, chunk, self.options.word_timestamps))
        entry.timed.append((chunk.window.offset, done(segments)))
        if rest is not None:
            self._enqueue(rest, entry, first=True)

    def _count_decoded(self, batch: list[Window]) -> list[_Pending]:
        """The inputs whose last window was in ``batch``, in the batch's order, no longer pending."""
        finished = []
        for window in batch:
            entry = self.pending[window.source]
            entry.windows_left -= 1
            if entry.decoded():
                del self.pending[window.source]
                finished.append(entry)
        self.done += len(batch)
        self.progress(self.done, self.total)
        return finished

    def _finish_file(self, entry: _Pending) -> FileResult:
        """The input's transcript: its windows' timed segments in time order, in the language of most of its speech
        (``domain.language.transcript_of``)."""
        transcript = transcript_of_windows(
            entry.timed, entry.duration, self.service.decoder, self.options, entry.first_language, entry.truncated
        )
        return FileResult(entry.source, transcript=transcript)


class _BatchProgress:
    """A decoder's reports on one batch, as windows done (``done`` before the batch plus the batch's share), passed
    on to the progress sink at most once every ``interval`` seconds and never backwards (a window decoded again at
    a higher temperature does not undo its share)."""

    def __init__(self, sink: ProgressSink, done: int, size: int, total: int, interval: float) -> None:
        self.sink = sink
        self.done = done
        self.size = size
        self.total = total
        self.interval = interval
        self.share = 0.0
        self.said = -math.inf

    def __call__(self, share: float) -> None:
        if share <= self.share or share >= 1.0:  # the whole batch is said once its windows are counted
            return
        self.share = share
        now = time.monotonic()
        if now - self.said >= self.interval:
            self.said = now
            self.sink(self.done + self.size * share, self.total)


def _blocks_of(waveform: Waveform) -> AudioBlocks:
    """A waveform already in memory as one block, with its ``Truncation``."""
    yield waveform.samples
    return waveform.truncated


def in_input_order(results: Iterator[FileResult], sources: Sequence[Path | str]) -> Iterator[FileResult]:
    """``results`` (one per source, as they finish) in the order of ``sources``: each is held back until those
    before it are out. A source given twice takes its results in turn (they are of the same file)."""
    waiting: dict[int, FileResult] = {}
    free: dict[Path | str, deque[int]] = {}
    for position, source in enumerate(sources):
        free.setdefault(source, deque()).append(position)
    following = 0
    for result in results:
        waiting[free[result.source].popleft()] = result
        while following in waiting:
            yield waiting.pop(following)
            following += 1


def _marking_last(windows: Iterator[Window]) -> Iterator[tuple[Window, bool]]:
    """Each window, and whether it is the last: one window of lookahead."""
    try:
        current = next(windows)
    except StopIteration:
        return
    for following in windows:
        yield current, False
        current = following
    yield current, True


def _unwrap(result: FileResult) -> Transcript:
    if result.error is not None:
        raise result.error
    assert result.transcript is not None
    return result.transcript
