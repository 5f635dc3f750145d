"""Where decoded windows get their word times: a pool beside the decoding thread, threads or worker processes.

Word timing (``Aligner.align``: softmax, median filter, DTW, whisper's heuristics, refinement) costs tens of ms a
window, and its Python parts (DTW's anti-diagonal loop, the heuristics) hold the GIL. On threads it competes with
the decoding thread, whose host work (building and launching each step's kernels) needs the GIL too: on a fast GPU
it slowed the decoder by about a quarter. Worker processes have GILs of their own. A window's attention and samples
(megabytes at large-v3's shapes) do not go through the pool's one pipe (pickled, then read by one worker at a time:
a queue that a batch of 64 large-v3 windows outgrew on a GPU): a helper thread writes them to a file in shared
memory (``/dev/shm``, else the temporary folder; numpy's ``tofile`` releases the GIL), which the worker reads and
deletes; only the rest of the chunk is pickled. The overlapped run then came close to the throughput without word
timing (the numbers, by machine: ``docs/performance.md``, "Numbers behind the docstrings", and #40-#43).

``WordTiming`` hands windows to threads, and, when given ``processes``, to a process pool from the second decoded
batch on: a run of one batch (a short single file) never waits for processes to start, and a longer run starts them
while its second batch decodes. An aligner whose windows cost more than a process's start (the phonetic one, holding
the GIL) starts them with the first batch already, when that batch holds at least
``first_batch_windows`` windows. A window whose process dies is timed again on a thread; an error raised by the
aligner reaches the caller as it would from a thread.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from pathlib import Path
from types import TracebackType

import numpy as np
from attrs import evolve, frozen

from onepass_whisper.domain.audio import DecodedChunk, LagEvidence, Truncation
from onepass_whisper.domain.language import transcript_of
from onepass_whisper.domain.model import Segment, TranscribeOptions, Transcript
from onepass_whisper.domain.ports import Aligner, Decoder, LagMeasuringAligner
from onepass_whisper.domain.segments import spanning

MAX_ALIGN_PROCESSES = 8  # a batch of 64 large-v3 windows keeps 8 busy for a fraction of a second (performance.md)


def default_align_workers() -> int:
    """Threads that time words while the decoder goes on: every core but the one the decoder's thread keeps busy."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def default_align_processes() -> int:
    """Processes that time words: every core but two (the decoding thread, and the pickling of windows)."""
    return max(1, min(MAX_ALIGN_PROCESSES, (os.cpu_count() or 2) - 2))


def transcript_of_windows(
    timed: Iterable[tuple[float, Future[list[Segment]]]],
    duration: float,
    decoder: Decoder,
    options: TranscribeOptions,
    first_language: str | None,
    truncated: Truncation | None = None,
) -> Transcript:
    """One input's transcript from its windows' timed segments (window offset, future), all done: in time order,
    as ``domain.language.transcript_of`` makes it; the service and the server's scheduler both finish inputs so."""
    segments: list[Segment] = []
    for _, future in sorted(timed, key=lambda item: item[0]):
        segments.extend(future.result())
    return transcript_of(
        segments,
        duration,
        model=decoder.name,
        fallback_language=options.language or first_language or "en",
        english_only=not decoder.is_multilingual,
        compression_limit=options.compression_ratio_threshold,
        truncated=truncated,
    )


def timed_segments(aligner: Aligner, chunk: DecodedChunk, word_timestamps: bool) -> list[Segment]:
    """``chunk``'s segments in file time, with their words timed by ``aligner`` when ``word_timestamps``, each
    spanning time and carrying the window's language.

    A module-level function, so that a process pool can run it: its arguments are pickled (the aligner's settings,
    the chunk's attention and its window's samples) and its segments come back.
    """
    offset, window_end = chunk.window.offset, chunk.window.end  # nothing of the window lies outside

    def inside(seconds: float) -> float:
        """A window time as a file time inside the window: words of consecutive windows stay in order."""
        return min(max(offset + seconds, offset), window_end)

    aligned = aligner.align(chunk) if word_timestamps else tuple(() for _ in chunk.segments)
    segments = []
    for decoded, words in zip(chunk.segments, aligned):
        file_words = tuple(evolve(word, start=inside(word.start), end=inside(word.end)) for word in words)
        start = inside(decoded.start)
        end = max(inside(decoded.end), start)
        if file_words:  # as openai-whisper: with word times, a segment spans its words
            start, end = file_words[0].start, file_words[-1].end
        segments.append(
            Segment(
                start=start,
                end=end,
                text=decoded.text,
                words=file_words,
                avg_logprob=chunk.avg_logprob,
                compression_ratio=chunk.compression_ratio,
                no_speech_prob=chunk.no_speech_prob,
                temperature=chunk.temperature,
                language=chunk.language,
                language_probability=chunk.language_probability,
            )
        )
    return spanning(segments, offset, window_end)  # none of zero length (``domain/segments.py``)


class WordTiming:
    """A context manager that times decoded windows with ``aligner`` on ``threads`` threads, and on ``processes``
    worker processes (none: threads only) from the second batch on, or from the first if it holds at least
    ``first_batch_windows`` windows (``batch_started``)."""

    def __init__(
        self, aligner: Aligner, threads: int, processes: int = 0, first_batch_windows: int | None = None
    ) -> None:
        self.aligner = aligner
        self._first_batch_windows = first_batch_windows
        self._threads = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="align")
        self._wanted = processes
        self._processes: ProcessPoolExecutor | None = None
        self._batches = 0
        self._spill: Path | None = None  # the folder of the windows' arrays on their way to a process
        self._names = itertools.count()

    def __enter__(self) -> WordTiming:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def batch_started(self, windows: int) -> None:
        """A batch of ``windows`` is about to be decoded: processes (if any) start and take the windows from the
        second batch on, or from a first batch of at least ``first_batch_windows``."""
        self._batches += 1
        big_first = self._first_batch_windows is not None and windows >= self._first_batch_windows
        if self._batches >= 2 or big_first:
            self.start_processes()

    def start_processes(self) -> None:
        """Start the worker processes now (a no-op without ``processes`` or once started); they import numpy and
        the aligner while the caller goes on."""
        if self._wanted > 0 and self._processes is None:
            # spawn, not fork: the parent runs MLX's threads (and a GPU context) that a forked child must not inherit
            context = multiprocessing.get_context("spawn")
            shared = Path("/dev/shm")
            self._spill = Path(tempfile.mkdtemp(prefix="onepass-align-", dir=shared if shared.is_dir() else None))
            self._processes = ProcessPoolExecutor(max_workers=self._wanted, mp_context=context)
            for _ in range(self._wanted):  # every worker started (one each), importing the aligner's modules
                self._processes.submit(_warm, self.aligner)

    @property
    def uses_processes(self) -> bool:
        return self._processes is not None

    def submit(
        self, chunk: DecodedChunk, word_timestamps: bool, aligner: Aligner | None = None
    ) -> Future[list[Segment]]:
        """``timed_segments(aligner, chunk, word_timestamps)`` on the pool (``aligner``: the pool's own unless
        given); its future."""
        aligner = self.aligner if aligner is None else aligner
        if self._processes is None or not word_timestamps:  # without word times there is nothing worth a process
            return self._threads.submit(timed_segments, aligner, chunk, word_timestamps)
        outer: Future[list[Segment]] = Future()
        self._threads.submit(self._hand_over, aligner, chunk, word_timestamps, outer)  # the decoder goes on at once
        return outer

    def measure(self, aligner: LagMeasuringAligner, chunk: DecodedChunk) -> Future[tuple[DecodedChunk, LagEvidence]]:
        """``aligner.measure(chunk)`` (a lag estimate's first phase: DTW) on the pool's threads; its future."""
        return self._threads.submit(aligner.measure, chunk)

    def _hand_over(
        self, aligner: Aligner, chunk: DecodedChunk, word_timestamps: bool, outer: Future[list[Segment]]
    ) -> None:
        """On a thread: write ``chunk``'s arrays out and give it to a process; time it here if none is left."""
        processes = self._processes
        if processes is not None and self._spill is not None:
            spilled = _SpilledChunk.write(chunk, self._spill / str(next(self._names)))
            try:
                inner = processes.submit(_timed_spilled, aligner, spilled, word_timestamps)
            except (BrokenProcessPool, RuntimeError):  # a worker died earlier (or the pool closed): threads only
                spilled.delete()
                self._processes = None
            else:

                def settle(done: Future[list[Segment]]) -> None:
                    spilled.delete()  # the worker deleted the files, unless it died first
                    if isinstance(done.exception(), BrokenProcessPool):  # killed, out of memory: time it here
                        _run(timed_segments, (aligner, chunk, word_timestamps), outer)
                    else:
                        copy_outcome(done, outer)

                inner.add_done_callback(settle)
                return
        _run(timed_segments, (aligner, chunk, word_timestamps), outer)

    def close(self) -> None:
        """Wait for the windows submitted, then stop the threads and processes."""
        self._threads.shutdown(wait=True)  # first: its hand-overs may still give windows to the processes
        if self._processes is not None:
            self._processes.shutdown(wait=True)
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)


def _run(
    function: Callable[[Aligner, DecodedChunk, bool], list[Segment]],
    arguments: tuple[Aligner, DecodedChunk, bool],
    target: Future[list[Segment]],
) -> None:
    try:
        target.set_result(function(*arguments))
    except BaseException as error:  # noqa: BLE001 - handed to the future's reader, as an executor does
        target.set_exception(error)


def copy_outcome(source: Future[list[Segment]], target: Future[list[Segment]]) -> None:
    """``target`` gets ``source``'s result or exception (``source`` done): one future standing for another."""
    error = source.exception()
    if error is None:
        target.set_result(source.result())
    else:
        target.set_exception(error)


@frozen
class _SpilledChunk:
    """A decoded chunk on its way to a worker process: its two big arrays in files, the rest pickled."""

    chunk: DecodedChunk  # attention and samples emptied
    attention: Path
    attention_shape: tuple[int, ...]
    samples: Path

    @classmethod
    def write(cls, chunk: DecodedChunk, stem: Path) -> _SpilledChunk:
        attention, samples = stem.with_suffix(".attention"), stem.with_suffix(".samples")
        np.ascontiguousarray(chunk.attention, dtype=np.float32).tofile(attention)
        chunk.window.samples.tofile(samples)  # float32, contiguous: the window's converter made it so
        empty = evolve(
            chunk,
            window=evolve(chunk.window, samples=np.empty(0, np.float32)),
            attention=np.empty((0, 0, 0), np.float32),
        )
        return cls(empty, attention, chunk.attention.shape, samples)

    def read(self) -> DecodedChunk:
        """The chunk as it was (in the worker); the files are deleted."""
        attention = np.fromfile(self.attention, dtype=np.float32).reshape(self.attention_shape)
        samples = np.fromfile(self.samples, dtype=np.float32)
        self.delete()
        return evolve(self.chunk, window=evolve(self.chunk.window, samples=samples), attention=attention)

    def delete(self) -> None:
        for path in (self.attention, self.samples):
            with suppress(FileNotFoundError):
                path.unlink()


def _timed_spilled(aligner: Aligner, spilled: _SpilledChunk, word_timestamps: bool) -> list[Segment]:
    """``timed_segments`` in a worker process, on a chunk whose arrays came through files."""
    return timed_segments(aligner, spilled.read(), word_timestamps)


def _warm(aligner: Aligner) -> None:
    """Run once in each new worker process: unpickling ``aligner`` imported its modules (numpy, scipy) there."""
