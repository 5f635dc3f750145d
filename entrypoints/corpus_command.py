"""`app transcribe-corpus INPUT_DIR -o OUT`: a folder of audio on a Ray cluster, with a manifest to resume from.

Ray is optional (``pip install 'ray>=2.60,<3'``; ``make install`` has it): it is imported only when there is work to do,
so the CLI imports, and this command says how to install it, where it is missing. The Ray side (actors, retries)
is ``entrypoints/ray_engine.py``; the manifest rules are ``application/corpus.py``; ``docs/scale-out.md`` has the
whole story.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Final, TextIO

import typer
from rich.console import Console

from onepass_whisper.adapters.writers import FORMATS, TranscriptFiles
from onepass_whisper.application.corpus import ManifestRecord, plan_corpus, read_manifest
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.console import check_output_dir, error, note, warn
from onepass_whisper.entrypoints.container import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from onepass_whisper.entrypoints.inputs import AUDIO_SUFFIXES, Job, find_inputs
from onepass_whisper.entrypoints.options import (
    BatchSizeOption,
    CharTimingOption,
    LanguageOption,
    ModelOption,
    OutputFormat,
    OutputFormatOption,
    PhoneticOption,
    RefineOption,
    check_phonetic,
)

if TYPE_CHECKING:
    from onepass_whisper.entrypoints.container import Container

INSTALL_HINT: Final = "pip install 'ray>=2.60,<3' (make install has it)"
MANIFEST_NAME: Final = "manifest.jsonl"


class CorpusExit(IntEnum):
    OK = 0  # every file done, in this run or an earlier one
    FILES_FAILED = 1  # some files failed (now, or earlier and not retried); all are in the manifest
    USAGE = 2  # bad arguments, or options the model refuses
    MODEL = 3  # the model could not be loaded
    OUTPUT_DIR = 4  # the output folder is not writable
    RAY = 5  # Ray is not installed, the cluster cannot be reached, or workers cannot be started
    TRUNCATED = 6  # every file done, but some inputs of this run were cut short (``app transcribe`` says 5: taken)
    INTERRUPTED = 130  # Ctrl-C; the manifest holds every finished file: rerun to resume


CORPUS_EXIT_CODES_HELP: Final = (
    "[b]Exit codes[/b]: 0 every file done (now or in an earlier run) · 1 some files failed, each in the manifest "
    "with its reason · 2 usage error · 3 the model could not be loaded · 4 the output folder is not writable · "
    "5 Ray missing, unreachable or its workers cannot start · 6 all done, but some inputs were cut short (each in "
    "the manifest and named on stderr) · 130 interrupted (rerun to resume)."
)


class ManifestFile:
    """The manifest on disk: read once, then appended one flushed, fsynced line per finished file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def read(self) -> dict[str, ManifestRecord]:
        if not self.path.exists():
            return {}
        with self.path.open(encoding="utf-8", errors="surrogateescape") as file:
            return read_manifest(file)

    def append(self, record: ManifestRecord) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", errors="surrogateescape")
            if self._file.tell() > 0 and not self.path.read_bytes().endswith(b"\n"):
                self._file.write("\n")  # a crash cut the last line: end it, so that this record stands alone
        self._file.write(record.to_line() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def transcribe_corpus(
    ctx: typer.Context,
    input_dir: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            metavar="INPUT_DIR",
            help=f"A folder searched recursively for audio files ({', '.join(sorted(AUDIO_SUFFIXES))}).",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Where transcripts go, as [i]<input stem>.<format>[/i] with INPUT_DIR's sub-folders mirrored, "
            f"and the manifest ({MANIFEST_NAME}).",
            show_default=False,
        ),
    ],
    address: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR",
            help="A running Ray cluster (host:port of its head, [b]auto[/b] for the one `ray start` began on "
            "this machine, or ray://host:10001). Left out: a Ray instance is started on this machine.",
            show_default=False,
            rich_help_panel="Cluster",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(min=1, metavar="N", help="Ray actors, each with its own loaded model.", rich_help_panel="Cluster"),
    ] = 1,
    cpus_per_worker: Annotated[
        float,
        typer.Option(min=0.0, metavar="C", help="CPUs Ray reserves for each worker.", rich_help_panel="Cluster"),
    ] = 1.0,
    gpus_per_worker: Annotated[
        float,
        typer.Option(
            min=0.0,
            metavar="G",
            help="GPUs Ray reserves for each worker (NVIDIA nodes with mlx\\[cuda13]; a fraction shares a GPU).",
            rich_help_panel="Cluster",
        ),
    ] = 0.0,
    files_per_batch: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Files handed to a worker at a time; their windows share decoder batches.",
            rich_help_panel="Cluster",
        ),
    ] = 8,
    model: ModelOption = DEFAULT_MODEL,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    language: LanguageOption = None,
    refine: RefineOption = True,
    phonetic: PhoneticOption = False,
    char_timing: CharTimingOption = False,
    output_format: OutputFormatOption = OutputFormat.ALL,
    manifest: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help=f"The manifest (JSON Lines). \\[default: DIR/{MANIFEST_NAME}]",
            show_default=False,
            rich_help_panel="Output",
        ),
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Try again the files the manifest lists as failed (without it they stay failed).",
            rich_help_panel="Output",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Transcribe every file again, even those the manifest lists as done.",
            rich_help_panel="Output",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", help="Print errors and the summary only, not a line per file."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Also show Ray's own log lines on stderr, as Ray prints them (by default they go to a file, "
            "named on stderr when the run fails, and Ray's session logs).",
        ),
    ] = False,
) -> None:
    """Transcribe a folder of audio on Ray workers; a rerun resumes from the manifest.

    Each worker loads the model once (every node must be able to load it) and decodes the files it holds
    together. Every transcript is written atomically as it finishes, and a line about it (file, status, duration,
    seconds, error) is appended to the manifest. A rerun skips files done earlier; a file whose worker dies is
    tried again elsewhere, and one that fails twice is marked failed with the reason.
    """
    container: Container = ctx.obj
    stderr = Console(stderr=True, soft_wrap=True, highlight=False)
    if language is not None and not language.strip():
        raise typer.BadParameter("give a language code or name, or leave the option out", param_hint="--language")
    check_phonetic(phonetic)
    formats = FORMATS if output_format is OutputFormat.ALL else (output_format.value,)
    files = TranscriptFiles(formats=formats)
    options = TranscribeOptions(language=None if language is None else language.strip())

    jobs = find_inputs([input_dir]).jobs
    if not jobs:
        error(stderr, f"{input_dir}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})")
        raise typer.Exit(int(CorpusExit.FILES_FAILED))
    check_output_dir(output_dir, stderr, int(CorpusExit.OUTPUT_DIR))
    by_file = {_manifest_name(job, input_dir): job for job in jobs}
    log = ManifestFile(manifest or output_dir / MANIFEST_NAME)
    plan = plan_corpus(
        list(by_file),
        log.read(),
        lambda file: all(path.exists() for path in files.targets(output_dir / by_file[file].name)),
        retry_failed=retry_failed,
        overwrite=overwrite,
    )
    if plan.done_before and not quiet:
        note(stderr, f"{len(plan.done_before)} files done in an earlier run: skipped")
    if plan.failed_before:
        error(
            stderr,
            f"{len(plan.failed_before)} files failed in an earlier run (see {log.path}; --retry-failed tries "
            "them again)",
        )

    tally = _Tally(stderr, quiet)
    code = CorpusExit.OK
    if plan.todo:
        container.config.model.from_value(model)
        container.config.batch_size.from_value(batch_size)
        container.config.refine.from_value(refine)
        container.config.phonetic.from_value(phonetic)
        container.config.char_timing.from_value(char_timing)
        tasks = [(file, by_file[file].source, output_dir / by_file[file].name) for file in plan.todo]
        shape = (workers, cpus_per_worker, gpus_per_worker, files_per_batch)
        try:
            with ray_lines_to_file(verbose, stderr) as ray_log:
                code = _run(container, tasks, options, files, address, shape, log, tally, stderr)
        finally:
            log.close()
        if ray_log is not None:
            _keep_if_failed(ray_log, code is not CorpusExit.OK, stderr)
    if code is CorpusExit.OK:
        tally.summary(skipped=len(plan.done_before), failed_before=len(plan.failed_before), workers=workers)
        if tally.failed or plan.failed_before:
            code = CorpusExit.FILES_FAILED
        elif tally.truncated:
            code = CorpusExit.TRUNCATED
    raise typer.Exit(int(code))


def _run(
    container: Container,
    tasks: list[tuple[str, Path, Path]],
    options: TranscribeOptions,
    files: TranscriptFiles,
    address: str | None,
    shape: tuple[int, float, float, int],
    log: ManifestFile,
    tally: _Tally,
    stderr: Console,
) -> CorpusExit:
    try:
        from onepass_whisper.entrypoints import ray_engine
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise
        error(stderr, f"transcribe-corpus needs Ray, which is not installed: {INSTALL_HINT}")
        return CorpusExit.RAY

    def record(entry: ManifestRecord) -> None:
        log.append(entry)
        tally.add(entry)

    count, cpus, gpus, per_batch = shape
    try:
        started = ray_engine.connect(address)
    except ray_engine.ClusterError as exc:
        error(stderr, str(exc))
        return CorpusExit.RAY
    try:
        for warning in ray_engine.check_resources(count, cpus, gpus):
            warn(stderr, warning)
        settings = ray_engine.WorkerSettings.of(container, options, files)
        run = ray_engine.CorpusRun(settings, ray_engine.Workers(count, cpus, gpus, per_batch), record)
        run.run([ray_engine.FileTask(file, str(source), str(base)) for file, source, base in tasks])
    except ray_engine.RunStopped as exc:
        error(stderr, str(exc))
        return {"model": CorpusExit.MODEL, "usage": CorpusExit.USAGE, "cluster": CorpusExit.RAY}[exc.fatal.kind]
    except KeyboardInterrupt:
        error(stderr, f"interrupted after {tally.done + tally.failed} of {len(tasks)} files; rerun to resume")
        return CorpusExit.INTERRUPTED
    finally:
        if started:
            ray_engine.disconnect()
    return CorpusExit.OK


@contextlib.contextmanager
def ray_lines_to_file(show: bool, console: Console) -> Iterator[Path | None]:
    """Unless ``show``, this process's file descriptor 2 goes to a temporary file while Ray runs in it; the path.

    Ray prints on fd 2 itself: its C++ core's warnings and errors (an ``E ... core_worker`` note on every run
    whose actors may restart, state dumps after a lost node), its Python logging (to whatever ``sys.stderr`` is),
    and the output of the processes a local instance starts. They stay in Ray's session logs
    (``/tmp/ray/session_latest/logs``) and in this file; ``console``, the command's own lines, writes to a copy of
    the real stderr meanwhile (when ``sys.stderr`` is not fd 2, as under a test's runner, nothing changes for it).
    """
    if show:
        yield None
        return
    handle, name = tempfile.mkstemp(prefix="onepass-ray-", suffix=".log")
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = None
    try:
        if _on_fd2(sys.stderr):
            terminal = open(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding, errors="replace")
            console.file = terminal
        os.dup2(handle, 2)
        yield Path(name)
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(handle)
        if terminal is not None:
            console.file = sys.stderr
            terminal.close()


def _on_fd2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: a test's captured stream
        return False


def _keep_if_failed(ray_log: Path, failed: bool, stderr: Console) -> None:
    """Ray's lines of a failed run stay in their file, named on stderr; otherwise the file goes."""
    try:
        if failed and ray_log.stat().st_size > 0:
            note(stderr, f"Ray's own messages of this run: {ray_log}")
        else:
            ray_log.unlink()
    except OSError:
        pass


def _manifest_name(job: Job, input_dir: Path) -> str:
    return job.source.relative_to(input_dir).as_posix()


class _Tally:
    """Counts outcomes as they come and says each on stderr."""

    def __init__(self, stderr: Console, quiet: bool) -> None:
        self.stderr = stderr
        self.quiet = quiet
        self.done = 0
        self.failed = 0
        self.truncated = 0  # done, but cut short
        self.audio_seconds = 0.0
        self.started = time.perf_counter()

    def add(self, record: ManifestRecord) -> None:
        if record.status == "done":
            self.done += 1
            self.audio_seconds += record.duration or 0.0
            if not self.quiet:
                note(self.stderr, f"done {record.file} ({record.duration or 0.0:.1f} s of audio)")
            if record.truncated is not None:  # shown even with --quiet: the transcript lacks what was not there
                self.truncated += 1
                warn(self.stderr, f"{record.file} is {record.truncated}; transcribed what is there")
        else:
            self.failed += 1
            error(self.stderr, f"{record.file}: {record.error}")

    def summary(self, skipped: int, failed_before: int, workers: int) -> None:
        elapsed = time.perf_counter() - self.started
        parts = [f"{self.done} transcribed"]
        if skipped:
            parts.append(f"{skipped} skipped (done earlier)")
        if self.failed or failed_before:
            parts.append(f"{self.failed + failed_before} failed")
        if self.truncated:
            parts.append(f"{self.truncated} cut short")
        speed = f", {self.audio_seconds / elapsed:.1f} s of audio per second" if self.done and elapsed > 0 else ""
        note(self.stderr, f"{', '.join(parts)} in {elapsed:.1f} s ({workers} workers{speed})")
