"""Cross-request batching: the windows of every request in flight share decoder batches.

A server's requests arrive one by one, from many clients; decoding each alone leaves the decoder's batch (the
product's point: many windows decoded together, word times from the same pass) mostly empty. ``BatchScheduler``
runs one long-lived loop on a thread of its own, which builds the decoder and is the only one to use it (MLX keeps
its streams per thread: a model loaded on one thread cannot run on another):

- ``submit`` cuts a request's samples into windows (as ``TranscriptionService`` cuts a file) and queues them;
- the loop takes up to ``batch_size`` queued windows of equal options, oldest first, from any number of requests,
  after a short gathering wait (at most ``gather_seconds`` after the oldest window was queued, so a lone request
  is never held longer than that);
- each decoded window's words are timed on ``WordTiming``'s pool and routed back to the request that owns the
  window (a window carries its request's number as its ``source``: no word can reach another request);
- a request is answered as soon as its own windows are decoded and timed, whatever the others are doing;
- a cancelled request's windows leave the queue (its client went away); a request whose decoding or timing fails
  gets that error, the others in its batch are decoded again without it.

The queue is bounded (``max_requests`` in flight: ``QueueFullError`` beyond, with an estimate of when to retry);
``close`` stops taking requests (``SchedulerClosedError``) and, with ``drain``, answers those in flight first.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from attrs import define, field

from onepass_whisper.application.batch_filling import Queued, fill_batch
from onepass_whisper.application.no_speech import speech_only
from onepass_whisper.application.run_lag import MeasuredWindow, RunLag, done, measure_window, time_measured
from onepass_whisper.application.scheduler_records import (
    BatchRecord,
    QueueFullError,
    SchedulerClosedError,
    SchedulerStats,
)
from onepass_whisper.application.word_timing import (
    WordTiming,
    default_align_workers,
    timed_segments,
    transcript_of_windows,
)
from onepass_whisper.domain.audio import DecodedChunk, Waveform, Window, finite_samples
from onepass_whisper.domain.decoding import settle_tail, timed_at_once
from onepass_whisper.domain.errors import AudioLoadError
from onepass_whisper.domain.model import Segment, TranscribeOptions, Transcript
from onepass_whisper.domain.packing import Pack, pack, split_chunk, unfinished
from onepass_whisper.domain.ports import Aligner, Decoder, LagMeasuringAligner, LagStore
from onepass_whisper.domain.windowing import stream_windows

DEFAULT_GATHER_SECONDS = 0.05  # heuristic: a short wait for other requests' windows, small beside a batch's decoding
DEFAULT_MAX_REQUESTS = 64  # requests in flight (queued, decoding or timing) before new ones are refused
RECENT_BATCHES = 256  # batches remembered for ``stats`` (bounded: a long-running server keeps flat memory)


class Ticket:
    """A submitted request: its future transcript, and a way to withdraw it."""

    def __init__(self, scheduler: BatchScheduler, number: int, future: Future[Transcript]) -> None:
        self._scheduler = scheduler
        self.number = number
        self.future = future

    def cancel(self) -> None:
        """Withdraw the request: its queued windows are dropped, and what is being decoded of it is discarded."""
        self._scheduler._cancel(self.number)


@define
class _Request:
    number: int
    options: TranscribeOptions
    duration: float
    future: Future[Transcript]
    windows_left: int = 0  # queued or being decoded
    first_language: str | None = None
    timed: list[tuple[float, Future[list[Segment]]]] = field(factory=list)  # (window offset, its segments)
    measured: list[MeasuredWindow] = field(factory=list)  # with a lag to estimate: windows to time once it is known
    finishing: bool = False  # every window decoded: waiting for word times


class BatchScheduler:
    """Decodes the windows of all requests in flight together; see the module's doc."""

    def __init__(
        self,
        decoder_factory: Callable[[], Decoder],
        aligner: Aligner,
        *,
        batch_size: int = 16,
        gather_seconds: float = DEFAULT_GATHER_SECONDS,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        align_workers: int | None = None,
        align_processes: int = 0,
        pack_seconds: float = 0.0,
        lag_store: LagStore | None = None,
    ) -> None:
        """``pack_seconds``: requests up to that long share 30-s windows (``domain/packing.py``); 0: never.
        ``lag_store``: where an aligner that estimates the model's lag keeps it (``application/run_lag.py``: a
        request gets its own estimate, else the server's once its requests settled it, else the kept one; it is
        never held for other requests)."""
        if batch_size < 1 or max_requests < 1 or gather_seconds < 0 or pack_seconds < 0:
            raise ValueError(f"bad limits: batch {batch_size}, requests {max_requests}, gather {gather_seconds}")
        self.pack_seconds = pack_seconds
        self._packs: dict[int, Pack] = {}  # packs being decoded, by their window's source (negative)
        self._pack_numbers = itertools.count(-1, -1)
        self._alone: set[int] = set()  # requests decoded alone from now on (their pack could not be split)
        self.aligner = aligner
        self._lag = RunLag(aligner, lag_store) if isinstance(aligner, LagMeasuringAligner) else None
        self.batch_size = batch_size
        self.gather_seconds = gather_seconds
        self.max_requests = max_requests
        self._timing = WordTiming(aligner, align_workers or default_align_workers(), align_processes)
        self._lock = threading.Condition()
        self._queues: dict[int, deque[Queued]] = {}  # each request's windows to decode, oldest request first
        self._requests: dict[int, _Request] = {}
        self._numbers = itertools.count()
        self._closing = False
        self._answered = self._failed = self._cancelled = 0
        self._totals = [0, 0, 0]  # batches, windows, requests summed over batches
        self._batches: deque[BatchRecord] = deque(maxlen=RECENT_BATCHES)
        self._factory = decoder_factory
        self._decoder: Decoder | None = None
        self._startup_error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()
        self._ready.wait()
        failure = self._failed_start()
        if failure is not None:  # the model could not be loaded: no scheduler
            self._thread.join()
            self._timing.close()
            raise failure

    def _failed_start(self) -> BaseException | None:
        """What the loop's thread raised while building the decoder, if anything."""
        return self._startup_error

    @property
    def decoder(self) -> Decoder:
        assert self._decoder is not None
        return self._decoder

    def __enter__(self) -> BatchScheduler:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ requests

    def submit(self, waveform: Waveform, options: TranscribeOptions) -> Ticket:
        """Queue ``waveform``'s windows; the ticket's future gives its ``Transcript`` or the error that stopped it.

        Raises at once ``AudioLoadError`` (no samples), ``QueueFullError`` or ``SchedulerClosedError``.
        """
        if waveform.samples.size == 0:
            raise AudioLoadError("<upload>", "no samples")
        future: Future[Transcript] = Future()
        with self._lock:
            self._check_open()
            number = next(self._numbers)
        samples = finite_samples(waveform.samples)  # outside the lock: numpy work
        windows = list(stream_windows([samples], source=number))
        with self._lock:
            self._check_open()
            request = _Request(number, options, waveform.duration, future, windows_left=len(windows))
            self._requests[number] = request
            now = time.monotonic()
            self._queues[number] = deque(Queued(window, now) for window in windows)
            self._lock.notify_all()
        return Ticket(self, number, future)

    def _check_open(self) -> None:
        if self._closing:
            raise SchedulerClosedError()
        if len(self._requests) >= self.max_requests:
            raise QueueFullError(len(self._requests), self._retry_after())

    def _retry_after(self) -> int:
        """Seconds until the queue has likely moved on by a batch or more: the recent batches' pace."""
        recent = list(self._batches)[-8:]
        per_batch = sum(b.seconds for b in recent) / len(recent) if recent else 1.0
        return max(1, math.ceil(per_batch * max(1, self._queued() // self.batch_size)))

    def _cancel(self, number: int) -> None:
        with self._lock:
            request = self._requests.pop(number, None)
            if request is None:
                return
            self._queues.pop(number, None)
            self._cancelled += 1
            request.future.cancel()
            self._lock.notify_all()

    def stats(self) -> SchedulerStats:
        with self._lock:
            return SchedulerStats(
                in_flight=len(self._requests),
                queued_windows=self._queued(),
                answered=self._answered,
                failed=self._failed,
                cancelled=self._cancelled,
                batches=tuple(self._batches),
                decoded_batches=self._totals[0],
                decoded_windows=self._totals[1],
                batch_requests=self._totals[2],
            )

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Take no new requests; with ``drain`` answer those in flight first, else cancel them; then stop."""
        with self._lock:
            self._closing = True
            if not drain:
                for number in list(self._requests):
                    self._requests[number].future.cancel()
                self._cancelled += len(self._requests)
                self._requests.clear()
                self._queues.clear()
            self._lock.notify_all()
        self._thread.join(timeout)
        self._timing.close()

    @property
    def closing(self) -> bool:
        return self._closing

    # ---------------------------------------------------------------------------------------------------- loop

    def _run(self) -> None:
        try:
            self._decoder = self._factory()
        except BaseException as error:  # noqa: BLE001 - raised again by the constructor, on the caller's thread
            self._startup_error = error
            return
        finally:
            self._ready.set()
        self._loop()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            options = self._requests_options(batch)
            if options is None:  # every request of the batch was cancelled meanwhile
                continue
            try:
                self._decode(batch, options)
            except Exception as error:  # noqa: BLE001 - a bug: its requests fail, the loop (and server) go on
                for source in {w.source for w in batch}:
                    self._fail(source, error)

    def _next_batch(self) -> list[Window] | None:
        """The next windows to decode together, after the gathering wait; None once closed and all answered.

        Requests take turns, a window each, oldest request first, among those with the oldest request's options:
        a short request that arrives behind a long one shares the next batch instead of waiting for all of it.
        """
        with self._lock:
            while not self._queued():
                if self._closing and not self._requests:
                    return None
                self._lock.wait(0.5 if self._closing else None)
            deadline = min(q[0].since for q in self._queues.values() if q) + self.gather_seconds
            while self._queued() < self.batch_size and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            options = self._first_options()
            turns = [
                queue for number, queue in self._queues.items() if queue and self._requests[number].options == options
            ]
            batch = self._take(turns, options)
            for number in [n for n, queue in self._queues.items() if not queue]:
                del self._queues[number]
            return batch

    def _take(self, turns: list[deque[Queued]], options: TranscribeOptions | None) -> list[Window]:
        """The next batch's windows from ``turns`` (``fill_batch``), short requests' windows packed where packing
        is on and the language is known before decoding (a pack has one language)."""
        packing = self.pack_seconds > 0 and options is not None and self._one_language(options)
        alone, bins = fill_batch(turns, self.batch_size, self.pack_seconds if packing else 0.0, self._alone)
        for windows in bins:
            packed = pack(windows, next(self._pack_numbers))
            self._packs[packed.window.source] = packed
            alone.append(packed.window)
        return alone

    def _one_language(self, options: TranscribeOptions) -> bool:
        return options.language is not None or not self.decoder.is_multilingual

    def _queued(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _first_options(self) -> TranscribeOptions | None:
        """The options of the oldest request with windows queued."""
        return next((self._requests[n].options for n, queue in self._queues.items() if queue), None)

    def _requests_options(self, batch: Sequence[Window]) -> TranscribeOptions | None:
        with self._lock:
            for source in self._sources(batch):
                request = self._requests.get(source)
                if request is not None:
                    return request.options
        return None

    def _sources(self, batch: Sequence[Window]) -> list[int]:
        """The requests whose windows ``batch`` holds, a pack's included, in order."""
        return list(dict.fromkeys(w.source for w in self._unpacked(batch)))

    def _unpacked(self, batch: Sequence[Window]) -> list[Window]:
        """``batch`` with each pack replaced by its parts' own windows."""
        windows = []
        for window in batch:
            packed = self._packs.get(window.source)
            windows.extend([part.window for part in packed.parts] if packed is not None else [window])
        return windows

    def _decode(self, batch: list[Window], options: TranscribeOptions) -> None:
        started = time.perf_counter()
        self._timing.batch_started(len(batch))
        try:
            chunks = self.decoder.decode_batch(batch, options)
        except Exception as error:  # noqa: BLE001 - one request's windows may be at fault: the others go on
            self._isolate(batch, options, error)
            return
        record = BatchRecord(len(batch), len(self._sources(batch)), time.perf_counter() - started)
        with self._lock:
            self._batches.append(record)
            self._totals = [self._totals[0] + 1, self._totals[1] + record.windows, self._totals[2] + record.requests]
        for chunk in chunks:
            packed = self._packs.pop(chunk.window.source, None)
            if packed is None:
                self._route(speech_only(chunk, options), options)
            else:  # no no-speech rule on a pack: its probability is the first part's (parts have sound: ``packable``)
                self._route_pack(packed, chunk, options)

    def _isolate(self, batch: list[Window], options: TranscribeOptions, error: Exception) -> None:
        """A batch failed: alone, its request gets the error; else each request's windows are decoded apart."""
        windows = self._unpacked(batch)
        for window in batch:
            self._packs.pop(window.source, None)
        sources = list(dict.fromkeys(w.source for w in windows))
        with self._lock:
            self._alone.update(sources)
        if len(sources) == 1:
            self._fail(sources[0], error)
            return
        for source in sources:
            self._decode([w for w in windows if w.source == source], options)

    def _route(self, chunk: DecodedChunk, options: TranscribeOptions) -> None:
        """Hand ``chunk``'s words to the request that owns its window (nothing, if it was cancelled)."""
        number = chunk.window.source
        with self._lock:
            request = self._requests.get(number)
        if request is None:
            return
        try:
            rest = None
            timed: Future[list[Segment]]
            if self._lag is not None and options.word_timestamps:  # timed once its request's windows are measured
                window, rest = measure_window(self._lag, self._timing, chunk)
                with self._lock:
                    request.measured.append(window)
                timed = window.timed
            elif timed_at_once(chunk):  # timed now: the tail starts after the window's last word
                segments, rest = settle_tail(chunk, timed_segments(self.aligner, chunk, options.word_timestamps))
                timed = done(segments)
            else:
                timed = self._timing.submit(chunk, options.word_timestamps)
        except Exception as error:  # noqa: BLE001 - this request's failure, not the others'
            self._fail(number, error)
            return
        self._settle(request, chunk.language, (chunk.window.offset, timed), rest)

    def _route_pack(self, packed: Pack, chunk: DecodedChunk, options: TranscribeOptions) -> None:
        """Split a pack's decoded chunk into one chunk per part (``domain/packing.py``), each timed as a window of
        its own and handed to its request; parts it cannot hand out with certainty, or that the model did not
        finish, are decoded again, each alone."""
        parts = split_chunk(packed, chunk)
        redo = set(range(len(packed.parts))) if parts is None else set(unfinished(packed, parts))
        for index, part in enumerate(packed.parts):
            with self._lock:
                request = self._requests.get(part.window.source)
            if request is None:  # cancelled meanwhile
                continue
            if parts is None or index in redo:
                self._again_alone(part.window)
                continue
            try:
                timed: Future[list[Segment]]
                if self._lag is not None and options.word_timestamps:
                    window = MeasuredWindow(part.window.offset, self._timing.measure(self._lag.aligner, parts[index]))
                    with self._lock:
                        request.measured.append(window)
                    timed = window.timed
                else:
                    timed = self._timing.submit(parts[index], options.word_timestamps)
            except Exception as error:  # noqa: BLE001 - this request's failure, not the others'
                self._fail(part.window.source, error)
                continue
            self._settle(request, chunk.language, (part.window.offset, timed), None)

    def _again_alone(self, window: Window) -> None:
        """Queue a request's window first, to be decoded alone (never packed again)."""
        with self._lock:
            if window.source not in self._requests:
                return
            self._alone.add(window.source)
            self._queues.setdefault(window.source, deque()).appendleft(Queued(window, time.monotonic()))
            self._lock.notify_all()

    def _settle(
        self,
        request: _Request,
        language: str,
        timed: tuple[float, Future[list[Segment]]],
        rest: Window | None,
    ) -> None:
        """Record a decoded window of ``request`` (its window offset and timed segments); queue ``rest``, the
        window's undecoded tail, first; answer the request once nothing of it is left to decode."""
        number = request.number
        with self._lock:
            if self._requests.get(number) is not request:
                return
            request.first_language = request.first_language or language
            request.timed.append(timed)
            if rest is not None:  # decoded again, first thing in the next batch
                self._queues.setdefault(number, deque()).appendleft(Queued(rest, time.monotonic()))
                self._lock.notify_all()
            else:
                request.windows_left -= 1
            if request.windows_left > 0 or request.finishing:
                return
            request.finishing = True
            waiting = {id(w.timed) for w in request.measured}  # those wait for the second phase, after these
            futures: list[Future[Any]] = [future for _, future in request.timed if id(future) not in waiting]
            futures += [w.measured for w in request.measured]
        _when_all_done(futures, lambda: self._finish(number))

    def _finish(self, number: int) -> None:
        """All of request ``number``'s windows are decoded and timed: answer it."""
        with self._lock:
            request = self._requests.get(number)
        if request is None:
            return
        if request.measured:  # measured: now timed with the request's lag, then finished
            try:
                self._time_measured(request)
            except Exception as error:  # noqa: BLE001 - its word timing failed: this request's error only
                self._fail(number, error)
            return
        try:
            transcript = transcript_of_windows(
                request.timed, request.duration, self.decoder, request.options, request.first_language
            )
        except Exception as error:  # noqa: BLE001 - its word timing failed: this request's error only
            self._fail(number, error)
            return
        with self._lock:
            if self._requests.pop(number, None) is None:
                return
            self._answered += 1
            self._lock.notify_all()
        request.future.set_result(transcript)

    def _time_measured(self, request: _Request) -> None:
        """The second phase of a request's windows: its lag (its own, else the server's, else the kept one)."""
        assert self._lag is not None
        windows, request.measured = request.measured, []
        lag = self._lag.of_file([w.evidence for w in windows])
        time_measured(windows, self._timing, self._lag.timing(self._lag.fallback() if lag is None else lag))
        _when_all_done([w.timed for w in windows], lambda: self._finish(request.number))

    def _fail(self, number: int, error: BaseException) -> None:
        with self._lock:
            request = self._requests.pop(number, None)
            if request is None:
                return
            self._queues.pop(number, None)
            self._failed += 1
            self._lock.notify_all()
        request.future.set_exception(error)


def _when_all_done(futures: Sequence[Future[Any]], then: Callable[[], None]) -> None:
    """Call ``then()`` once every future is done (at once if they all are), on the thread that ends the last."""
    left = [len(futures)]
    guard = threading.Lock()

    def one_done(_future: Future[Any]) -> None:
        with guard:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then()

    if not futures:
        then()
    for future in futures:
        future.add_done_callback(one_done)
