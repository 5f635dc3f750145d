"""The corpus engine: ``TranscriptionService`` on Ray actors, fed batches of files from the driver.

Each actor (``CorpusWorker``) builds the service from its own ``Container`` (configured as the driver's, with the
driver's overridden providers: tests' fakes) and so loads the model once per worker process. The driver keeps a
queue of files and hands each idle actor a *batch* of up to ``files_per_batch`` of them; the actor transcribes the
batch with ``transcribe_many`` (the windows of all its files share decoder batches), writes each transcript
atomically as soon as it is done, and streams one ``FileOutcome`` per file back (a Ray streaming generator), which
the driver appends to the manifest at once.

Faults: actors are created with ``max_restarts=-1``, so Ray starts a dead actor again (elsewhere when its node is
gone) and it reloads the model. The files of a batch that its actor did not finish, because the process died or
the method raised, are lost; ``application.corpus.RetryBook`` decides which are tried again (alone) and which have
failed for good. A file that cannot be read or written fails at once, with its reason: trying it again would
fail the same way. Errors that no file can get past (the model cannot be loaded, options the model refuses) stop
the run (``RunStopped``).

``seconds`` in the manifest is the actor's wall time from its previous result in the batch (or the batch's start)
to this file's result: the files of one batch are decoded together, and these shares add up to the actor's busy
time.

Input files, output folder and model must be reachable under the same paths from every node (a shared file
system), as ``ray start`` workers run the same installation (``docs/scale-out.md``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import ray
from attrs import define, field, frozen
from ray.exceptions import ActorUnavailableError, RayActorError, RayError, RayTaskError

from onepass_whisper.adapters.mlx.blas import THREAD_VARIABLES
from onepass_whisper.adapters.writers import TranscriptFiles
from onepass_whisper.application.corpus import ManifestRecord, RetryBook, take_batch
from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.domain.errors import (
    InvalidOptionError,
    ModelLoadError,
    TranscriptionError,
    UnsupportedLanguageError,
)
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.container import Container

OVERRIDABLE = ("model_source", "decoder", "audio", "aligner")  # providers whose overrides workers take over
REPLACEMENTS_PER_WORKER = 3  # heuristic: actors that are gone for good (ray.kill, lost node) replaced before giving up


# ------------------------------------------------------------------------------------------------ what travels


@frozen
class WorkerSettings:
    """Everything a worker needs to build the service and write transcripts (pickled to each actor)."""

    # the container's configuration: model, batch_size, cache_dir, refine, phonetic, char_timing
    config: dict[str, Any]
    overrides: dict[str, Any]  # instances that replace providers (tests' fakes); empty in real use
    options: TranscribeOptions
    files: TranscriptFiles
    threads: dict[str, str]  # the driver's BLAS thread settings, if any

    @classmethod
    def of(cls, container: Container, options: TranscribeOptions, files: TranscriptFiles) -> WorkerSettings:
        """The settings of ``container``: its configuration, and the instances its overridden providers give."""
        overrides = {name: getattr(container, name)() for name in OVERRIDABLE if getattr(container, name).overridden}
        threads = {name: os.environ[name] for name in THREAD_VARIABLES if os.environ.get(name)}
        return cls(dict(container.config()), overrides, options, files, threads)

    def use_threads(self) -> None:
        """Give this process the driver's BLAS thread settings, before BLAS is loaded. Ray sets OMP_NUM_THREADS to
        the actor's CPUs, which would override adapters/mlx/blas.py's measured choice of one thread that
        ``app transcribe`` makes."""
        for name in THREAD_VARIABLES:
            if name in self.threads:
                os.environ[name] = self.threads[name]
            else:
                os.environ.pop(name, None)

    def service(self) -> TranscriptionService:
        """A service built by a fresh container; ``ModelLoadError`` when the model cannot be loaded."""
        container = Container()
        container.config.from_dict(self.config)
        if container.config.align_processes() is None:  # the actors already fill the cores: words timed on threads
            container.config.align_processes.from_value(0)
        container.override_providers(**self.overrides)  # for the worker's whole life: never reset
        return container.service()


@frozen
class FileTask:
    file: str  # the manifest's name for it: relative to the corpus folder
    source: str  # where a worker reads it
    base: str  # its output path without extension


@frozen
class FileOutcome:
    file: str
    duration: float | None
    seconds: float
    error: str | None  # None: transcribed and written
    truncated: str | None = None  # written, but the input was cut short: what is missing


@frozen
class Fatal:
    """An error that stops the whole run."""

    kind: Literal["model", "usage", "cluster"]  # the model cannot be loaded; options it refuses; no workers
    message: str

    @classmethod
    def of(cls, exc: TranscriptionError) -> Fatal:
        return cls("model" if isinstance(exc, ModelLoadError) else "usage", str(exc))


class RunStopped(Exception):
    """The run cannot go on: the model or the options are refused, or workers cannot be started."""

    def __init__(self, fatal: Fatal) -> None:
        super().__init__(fatal.message)
        self.fatal = fatal


# -------------------------------------------------------------------------------------------------- the cluster


class ClusterError(Exception):
    """Ray could not be started or reached."""


def connect(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a Ray instance on this machine (None); True if one was started
    here (``disconnect`` then stops it). A Ray already initialized in this process (tests) is used as it is."""
    if ray.is_initialized():
        return False
    if not address:
        # Ray runs workers at nice 15 by default: on a machine that also does other work they would get what it
        # leaves. Here the workers are the job and the driver only waits. Set RAY_worker_niceness to choose.
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(unreachable(address, exc, os.environ)) from exc
    return True


AUTH_HINT = (
    "Ray >= 2.60 clusters use token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the head's "
    "`ray get-auth-token` (docs/scale-out.md)"
)


def unreachable(address: str | None, exc: Exception, env: Mapping[str, str]) -> str:
    """The one-line error for a cluster that cannot be started or reached; for a remote one without token
    authentication set up, how to set it up (Ray's own message names only the connection: its retries saying
    "Authentication token is missing" go to its logs)."""
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    message = f"cannot start or reach {where}: {' '.join(str(exc).split())[:300]}"
    if address and env.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        message += f"; {AUTH_HINT}"
    return message


def disconnect() -> None:
    ray.shutdown()


def check_resources(count: int, cpus: float, gpus: float) -> list[str]:
    """Warnings about workers the cluster cannot hold; ``RunStopped`` if it cannot hold a single one."""
    available: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    warnings = []
    for name, each in (("GPU", gpus), ("CPU", cpus)):
        total = float(available.get(name, 0.0))
        if each > total:
            raise RunStopped(Fatal("cluster", f"a worker needs {each:g} {name}s and the cluster has {total:g}"))
        if each > 0 and count * each > total:
            warnings.append(
                f"{count} workers need {count * each:g} {name}s and the cluster has {total:g}: "
                f"only {int(total // each)} run at a time"
            )
    return warnings


# ---------------------------------------------------------------------------------------------------- the actor


class CorpusWorker:
    """One Ray actor: a loaded model and the service around it."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.service: TranscriptionService | None = None
        self.fatal: Fatal | None = None
        settings.use_threads()
        try:
            self.service = settings.service()
        except TranscriptionError as exc:  # ModelLoadError
            self.fatal = Fatal.of(exc)

    def ready(self) -> Fatal | None:
        """None once the model is loaded; the reason it could not be."""
        return self.fatal

    def transcribe(self, tasks: Sequence[FileTask]) -> Iterator[FileOutcome | Fatal]:
        """Transcribe ``tasks`` together, writing and yielding each file's outcome as soon as it is done."""
        if self.service is None:
            assert self.fatal is not None
            yield self.fatal
            return
        by_source = {Path(task.source): task for task in tasks}
        mark = time.perf_counter()
        try:
            for result in self.service.transcribe_many(list(by_source), self.settings.options):
                task = by_source[Path(result.source)]
                duration: float | None = None
                error: str | None = None
                truncated: str | None = None
                if result.error is not None:
                    error = str(result.error)
                else:
                    assert result.transcript is not None
                    duration = result.transcript.duration
                    if result.transcript.truncated is not None:
                        truncated = result.transcript.truncated.describe()
                    try:
                        self.settings.files.write(result.transcript, Path(task.base))
                    except TranscriptionError as exc:  # OutputWriteError
                        error = str(exc)
                now = time.perf_counter()
                yield FileOutcome(task.file, duration, now - mark, error, truncated if error is None else None)
                mark = now
        except (ModelLoadError, InvalidOptionError, UnsupportedLanguageError) as exc:
            yield Fatal.of(exc)


# --------------------------------------------------------------------------------------------------- the driver


@frozen
class Workers:
    """How many actors, and the Ray resources each one reserves."""

    count: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    files_per_batch: int = 8


@define
class _Batch:
    actor: Any  # a Ray actor handle
    files: list[str]
    started: float
    finished: set[str] = field(factory=set)

    def unfinished(self) -> list[str]:
        return [file for file in self.files if file not in self.finished]


class CorpusRun:
    """Drives actors over a list of files until each one is done or failed; ``record`` gets every outcome."""

    def __init__(
        self,
        settings: WorkerSettings,
        workers: Workers,
        record: Callable[[ManifestRecord], None],
        book: RetryBook | None = None,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.record = record
        self.book = RetryBook() if book is None else book
        self.actor_class: Any = ray.remote(max_restarts=-1, max_task_retries=0)(CorpusWorker).options(
            num_cpus=workers.cpus, num_gpus=workers.gpus
        )
        # held here for the whole run: a restarted actor is given its arguments again (ray-project/ray#53727)
        self.settings_reference = ray.put(settings)
        self.actors: list[Any] = []
        self.replacements_left = REPLACEMENTS_PER_WORKER * workers.count
        self._starting: dict[Any, Any] = {}  # ready() reference -> actor
        self._running: dict[Any, _Batch] = {}  # streaming generator -> its batch
        self._idle: list[Any] = []

    def run(self, tasks: Sequence[FileTask]) -> None:
        """Transcribe ``tasks``; raises ``RunStopped`` for errors no file gets past. Actors are killed at the end."""
        by_file: Mapping[str, FileTask] = {task.file: task for task in tasks}
        queue = [task.file for task in tasks]
        try:
            for _ in range(min(self.workers.count, len(queue))):
                self._start_actor()
            while queue or self._running:
                while self._idle and queue:
                    files = take_batch(queue, self.book, self.workers.files_per_batch)
                    actor = self._idle.pop()
                    stream = actor.transcribe.options(num_returns="streaming").remote([by_file[f] for f in files])
                    self._running[stream] = _Batch(actor, files, time.perf_counter())
                [ready], _ = ray.wait([*self._running, *self._starting], num_returns=1)
                if ready in self._starting:
                    self._started(ready)
                else:
                    queue[:0] = self._advance(ready)
        finally:
            for actor in self.actors:
                ray.kill(actor)

    def _start_actor(self) -> None:
        actor = self.actor_class.remote(self.settings_reference)
        self.actors.append(actor)
        self._starting[actor.ready.remote()] = actor

    def _started(self, reference: Any) -> None:
        actor = self._starting.pop(reference)
        try:
            fatal = ray.get(reference)
        except ActorUnavailableError:  # restarting: ask again
            self._starting[actor.ready.remote()] = actor
            return
        except RayActorError as exc:
            if exc.actor_init_failed or self.replacements_left == 0:
                raise RunStopped(Fatal("cluster", f"a worker could not be started: {_reason(exc)}")) from exc
            self.replacements_left -= 1  # gone for good (killed, its node lost): a new one takes its place
            self.actors.remove(actor)
            self._start_actor()
            return
        if fatal is not None:
            raise RunStopped(fatal)
        self._idle.append(actor)

    def _advance(self, stream: Any) -> list[str]:
        """Take the next outcome of a running batch; returns files to put back at the front of the queue."""
        batch = self._running[stream]
        try:
            outcome = ray.get(next(stream))
        except StopIteration:
            del self._running[stream]
            self._idle.append(batch.actor)
            if batch.unfinished():  # cannot happen with transcribe_many: every input gets a result
                return self._lose(batch, "the worker returned without finishing it")
            return []
        except RayTaskError as exc:  # an unexpected exception in the worker (a bug, out of memory); it lives on
            del self._running[stream]
            self._idle.append(batch.actor)
            return self._lose(batch, _reason(exc))
        except RayError as exc:  # RayActorError: the worker process died (Ray restarts it); or its results are lost
            del self._running[stream]
            self._starting[batch.actor.ready.remote()] = batch.actor
            return self._lose(batch, _reason(exc))
        if isinstance(outcome, Fatal):
            raise RunStopped(outcome)
        assert isinstance(outcome, FileOutcome)
        batch.finished.add(outcome.file)
        self.record(
            ManifestRecord(
                file=outcome.file,
                status="done" if outcome.error is None else "failed",
                duration=outcome.duration,
                seconds=outcome.seconds,
                error=outcome.error,
                attempts=self.book.attempts(outcome.file),
                truncated=outcome.truncated,
            )
        )
        return []

    def _lose(self, batch: _Batch, reason: str) -> list[str]:
        lost = self.book.lost(batch.unfinished(), reason, seconds=time.perf_counter() - batch.started)
        for record in lost.failed:
            self.record(record)
        return list(lost.retry)


def _reason(exc: Exception) -> str:
    """One line about a Ray error: the worker's own exception, or the first line of Ray's message."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        cause = exc.cause
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:300]
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:300]
