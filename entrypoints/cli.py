"""The command line: ``app transcribe PATH...`` and ``app models``.

Adapters come from the ``Container`` in ``ctx.obj`` (tests pass one with fakes); they are resolved explicitly, not
injected, because Typer would turn an injected parameter into an option. Data (transcripts with ``--verbose``, the
model list) goes to stdout; progress, notes and errors go to stderr, each error on one line.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from enum import Enum, IntEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Final

import numpy as np
import typer
from attrs import frozen
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from onepass_whisper.adapters.writers import FORMATS, SubtitleLayout, TranscriptFiles
from onepass_whisper.application.settings import OPTIONS_FIELD, settings_differences, settings_record
from onepass_whisper.domain.audio import SAMPLE_RATE, Truncation
from onepass_whisper.domain.errors import (
    InvalidOptionError,
    ModelLoadError,
    TranscriptionError,
    UnsupportedLanguageError,
)
from onepass_whisper.domain.model import Transcript, TranscribeOptions
from onepass_whisper.domain.ports import STDIN, STDIN_NAME, AudioBlocks, AudioSource
from onepass_whisper.entrypoints.console import check_output_dir, error, note, warn
from onepass_whisper.entrypoints.container import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, Container
from onepass_whisper.entrypoints.corpus_command import CORPUS_EXIT_CODES_HELP, transcribe_corpus
from onepass_whisper.entrypoints.eval_command import eval_command
from onepass_whisper.entrypoints.inputs import AUDIO_SUFFIXES, Job, find_inputs
from onepass_whisper.entrypoints.models_command import models_command
from onepass_whisper.entrypoints.options import (
    BatchSizeOption,
    LanguageOption,
    ModelOption,
    OutputFormat,
    OutputFormatOption,
    PhoneticOption,
    RefineOption,
    check_phonetic,
)
from onepass_whisper.entrypoints.serve_command import SERVE_EXIT_CODES_HELP, serve


class ExitCode(IntEnum):
    OK = 0  # every input transcribed, or skipped because its outputs exist
    INPUTS_FAILED = 1  # some inputs failed (each named on stderr); the others were written
    USAGE = 2  # bad arguments or options (Click's code), or options the model refuses
    MODEL = 3  # the model could not be resolved, converted or loaded
    OUTPUT_DIR = 4  # the output folder cannot be created or written
    TRUNCATED = 5  # every input written, but some were cut short (each named in a warning): they need a look
    INTERRUPTED = 130  # Ctrl-C (SIGINT); finished transcripts are kept, none is left half-written
    TERMINATED = 143  # SIGTERM (128 + 15), handled as Ctrl-C


EXIT_CODES_HELP: Final = (
    "[b]Exit codes[/b]: 0 all inputs done (or skipped: outputs exist) · 1 some inputs failed, each named on "
    "stderr, the others written · 2 usage error (bad option, no path given, a language or task the model "
    "refuses) · 3 the model could not be loaded · 4 the output folder is not writable · 5 all written, but some "
    "inputs were cut short (each named in a warning; what was there is transcribed) · 130 interrupted (Ctrl-C) · "
    "143 terminated (SIGTERM)."
)

app = typer.Typer(
    name="app",
    help="Batched Whisper transcription on MLX, with word timestamps from one decoding pass.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=True,  # Typer's --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_show_locals=False,  # locals hold whole waveforms and model weights
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Task(str, Enum):
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


def version() -> str:
    """The installed distribution's version (``pyproject.toml``'s, as installed); "unknown" when run uninstalled."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("onepass-whisper")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"onepass-whisper {version()}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Batched Whisper transcription on MLX, with word timestamps from one decoding pass."""
    if ctx.obj is None:  # tests pass obj=<a Container with fakes>
        ctx.obj = Container()


# ---------------------------------------------------------------------------------------------------- transcribe


@app.command(epilog=EXIT_CODES_HELP)
def transcribe(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH",
            help="Audio or video files, folders searched recursively for them "
            f"({', '.join(sorted(AUDIO_SUFFIXES))}), or - for standard input (outputs: stdin.*). All their "
            "windows share batches.",
            show_default=False,
        ),
    ],
    model: ModelOption = DEFAULT_MODEL,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    language: LanguageOption = None,
    task: Annotated[
        Task,
        typer.Option(
            metavar="TASK",
            help="[b]transcribe[/b], or [b]translate[/b] into English.",
            rich_help_panel="Decoding",
        ),
    ] = Task.TRANSCRIBE,
    initial_prompt: Annotated[
        str | None,
        typer.Option(
            metavar="TEXT",
            help="Text that conditions the first window (names, spelling, style).",
            show_default=False,
            rich_help_panel="Decoding",
        ),
    ] = None,
    temperature: Annotated[
        str,
        typer.Option(
            metavar="T,T,...",
            help="Sampling temperatures, comma-separated: the first is used, the next ones only when a window "
            "fails the thresholds below.",
            rich_help_panel="Decoding",
        ),
    ] = "0,0.2,0.4,0.6,0.8,1",
    compression_ratio_threshold: Annotated[
        float | None,
        typer.Option(
            parser=lambda value: _optional_float(value, "--compression-ratio-threshold"),
            metavar="FLOAT|none",
            help="Retry at the next temperature when the text's gzip compression ratio is above this.",
            rich_help_panel="Decoding",
        ),
    ] = 2.4,
    logprob_threshold: Annotated[
        float | None,
        typer.Option(
            parser=lambda value: _optional_float(value, "--logprob-threshold"),
            metavar="FLOAT|none",
            help="Retry at the next temperature when the average token log probability is below this.",
            rich_help_panel="Decoding",
        ),
    ] = -1.0,
    no_speech_threshold: Annotated[
        float | None,
        typer.Option(
            parser=lambda value: _optional_float(value, "--no-speech-threshold"),
            metavar="FLOAT|none",
            help="A window is silent (no words) when its no-speech probability is above this and its log "
            "probability, over all tokens or over the words alone, below --logprob-threshold.",
            rich_help_panel="Decoding",
        ),
    ] = 0.6,
    word_timestamps: Annotated[
        bool,
        typer.Option(
            "--word-timestamps/--no-word-timestamps",
            help="Time every word (from the same decoding pass).",
            rich_help_panel="Decoding",
        ),
    ] = True,
    refine: RefineOption = True,
    phonetic: PhoneticOption = False,
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Where transcripts go, as [i]<input stem>.<format>[/i]; a folder input's sub-folders are "
            "mirrored.",
            rich_help_panel="Output",
        ),
    ] = Path("."),
    output_format: OutputFormatOption = OutputFormat.ALL,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace existing outputs. Without it, inputs whose outputs all exist are skipped, so a rerun "
            "resumes.",
            rich_help_panel="Output",
        ),
    ] = False,
    highlight_words: Annotated[
        bool,
        typer.Option(
            "--highlight-words",
            help="Underline each word as it is spoken in srt and vtt.",
            rich_help_panel="Subtitles",
        ),
    ] = False,
    max_line_width: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Characters per subtitle line before a line break.",
            show_default=False,
            rich_help_panel="Subtitles",
        ),
    ] = None,
    max_line_count: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Lines per subtitle cue (needs --max-line-width).",
            show_default=False,
            rich_help_panel="Subtitles",
        ),
    ] = None,
    max_words_per_line: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Words per subtitle cue (no effect with --max-line-width).",
            show_default=False,
            rich_help_panel="Subtitles",
        ),
    ] = None,
    verbose: Annotated[
        bool | None,
        typer.Option(
            "--verbose/--quiet",
            help="--verbose also prints each transcript to stdout; --quiet prints errors only. "
            "[dim]\\[default: progress bar and notes on stderr][/dim]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Transcribe audio files and folders into txt, srt, vtt, tsv and json files.

    Inputs that cannot be read (or do not exist) are named on stderr and skipped; the others are still transcribed
    and written. Each file is written atomically (a temporary file renamed into place).
    """
    stderr = Console(stderr=True, soft_wrap=True, highlight=False)
    layout = SubtitleLayout(highlight_words, max_line_width, max_line_count, max_words_per_line)
    _check_subtitle_options(layout, word_timestamps, stderr)
    check_phonetic(phonetic)
    options = _options(
        language=language,
        task=task,
        initial_prompt=initial_prompt,
        temperature=temperature,
        compression_ratio_threshold=compression_ratio_threshold,
        logprob_threshold=logprob_threshold,
        no_speech_threshold=no_speech_threshold,
        word_timestamps=word_timestamps,
    )
    formats = FORMATS if output_format is OutputFormat.ALL else (output_format.value,)
    recorded = settings_record(options, refine=refine, phonetic=phonetic)
    files = TranscriptFiles(formats=formats, layout=layout, word_timestamps=word_timestamps, options=recorded)
    with _terminate_as_interrupt():
        try:
            code = _transcribe(
                ctx.obj, stderr, paths, options, files,
                model=model, batch_size=batch_size, refine=refine, phonetic=phonetic, output_dir=output_dir,
                overwrite=overwrite,
                verbose=verbose,
            )
        except KeyboardInterrupt as exc:  # before or after the run itself: nothing half-written either way
            error(stderr, "interrupted; rerun to resume")
            code = _interrupted(exc)
    raise typer.Exit(int(code))


def _transcribe(
    container: Container,
    stderr: Console,
    paths: list[Path],
    options: TranscribeOptions,
    files: TranscriptFiles,
    *,
    model: str,
    batch_size: int,
    refine: bool,
    phonetic: bool,
    output_dir: Path,
    overwrite: bool,
    verbose: bool | None,
) -> ExitCode:
    """Find the inputs, check the model and options, plan the outputs, transcribe and write them; the exit code."""
    inputs = find_inputs(paths)
    jobs = inputs.jobs
    for path in inputs.missing:
        error(stderr, f"{path}: no such file or folder")
    for folder in inputs.empty_folders:
        error(stderr, f"{folder}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})")
    check_output_dir(output_dir, stderr, int(ExitCode.OUTPUT_DIR))
    container.config.model.from_value(model)
    container.config.batch_size.from_value(batch_size)
    container.config.refine.from_value(refine)
    container.config.phonetic.from_value(phonetic)
    if jobs:  # before anything is skipped: a bad model or option is an error whatever exists already
        checked = _check_model_and_options(container, stderr, options)
        if isinstance(checked, ExitCode):
            return checked
        model = checked  # as the transcripts record it
    todo: list[_Plan] = []
    stale = 0
    for job in jobs:
        plan = _Plan.of(job, output_dir, files, overwrite)
        differences = plan.settings_differences(model, files)
        if differences:
            stale += 1
            error(
                stderr,
                f"{job.source}: its outputs in {output_dir} were made with other settings: "
                f"{'; '.join(differences)}; kept as they are (use --overwrite to redo them)",
            )
            continue
        if not plan.formats:
            if verbose is not False:
                note(stderr, f"skipped {job.source}: its outputs exist (use --overwrite to replace them)")
            continue
        if plan.existing and verbose is not False:
            shown = ", ".join(str(p) for p in plan.existing)
            note(stderr, f"{job.source}: keeping existing {shown} (use --overwrite to replace)")
        todo.append(plan)

    run = _Run(stderr=stderr, files=files, verbose=verbose, several=len(todo) > 1)
    code = run.execute(container, todo, options, model) if todo else ExitCode.OK
    skipped = len(jobs) - len(todo) - stale
    failed = run.failed + len(inputs.missing) + len(inputs.empty_folders) + stale
    if verbose is not False and code is ExitCode.OK:
        run.summary(skipped=skipped, failed=failed)
    if code is ExitCode.OK and failed:
        code = ExitCode.INPUTS_FAILED
    elif code is ExitCode.OK and run.truncated:
        code = ExitCode.TRUNCATED
    return code


def _check_model_and_options(container: Container, stderr: Console, options: TranscribeOptions) -> ExitCode | str:
    """Load the model and have it check ``options``: the exit code when it cannot, else the model's name. The model
    is loaded here even when every output exists, so that a rerun with a model or option that would fail never
    exits 0."""
    try:
        decoder = container.decoder()
        decoder.check_options(options)
    except (InvalidOptionError, UnsupportedLanguageError) as exc:
        error(stderr, str(exc))
        return ExitCode.USAGE
    except ModelLoadError as exc:
        error(stderr, str(exc))
        return ExitCode.MODEL
    return decoder.name


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does (temporary files removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises ``_Terminated``. Python's default would end the process on the spot, leaving
    temporary files behind; a handler can only be set from the main thread (else this does nothing)."""

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise _Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(exc: KeyboardInterrupt) -> ExitCode:
    return ExitCode.TERMINATED if isinstance(exc, _Terminated) else ExitCode.INTERRUPTED


def _optional_float(value: str | float | None, option: str) -> float | None:
    if value is None or isinstance(value, float):
        return value
    if value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a number nor 'none'", param_hint=option) from None


def _temperatures(value: str) -> tuple[float, ...]:
    try:
        temperatures = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a comma-separated list of numbers", param_hint="--temperature"
        ) from None
    if not temperatures or any(t < 0 for t in temperatures):
        raise typer.BadParameter(f"{value!r}: give one or more temperatures >= 0", param_hint="--temperature")
    return temperatures


def _options(
    *,
    language: str | None,
    task: Task,
    initial_prompt: str | None,
    temperature: str,
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
    word_timestamps: bool,
) -> TranscribeOptions:
    if language is not None and not language.strip():
        raise typer.BadParameter("give a language code or name, or leave the option out", param_hint="--language")
    return TranscribeOptions(
        language=None if language is None else language.strip(),
        task=task.value,
        initial_prompt=initial_prompt,
        temperatures=_temperatures(temperature),
        compression_ratio_threshold=compression_ratio_threshold,
        logprob_threshold=logprob_threshold,
        no_speech_threshold=no_speech_threshold,
        word_timestamps=word_timestamps,
    )


def _check_subtitle_options(layout: SubtitleLayout, word_timestamps: bool, stderr: Console) -> None:
    """openai-whisper's rules: the layout options need word timestamps; two combinations have no effect."""
    if not word_timestamps:
        for flag, value in (
            ("--highlight-words", layout.highlight_words),
            ("--max-line-width", layout.max_line_width),
            ("--max-line-count", layout.max_line_count),
            ("--max-words-per-line", layout.max_words_per_line),
        ):
            if value:
                raise typer.BadParameter("needs word timestamps (leave out --no-word-timestamps)", param_hint=flag)
    if layout.max_line_count and not layout.max_line_width:
        warn(stderr, "--max-line-count has no effect without --max-line-width")
    if layout.max_words_per_line and layout.max_line_width:
        warn(stderr, "--max-words-per-line has no effect with --max-line-width")


# ---------------------------------------------------------------------------------------------------- outputs


@frozen
class _Plan:
    """A job with what to write: all formats, or (without --overwrite) the missing ones."""

    job: Job
    base: Path  # output path without extension
    formats: tuple[str, ...]
    existing: tuple[Path, ...]

    @classmethod
    def of(cls, job: Job, output_dir: Path, files: TranscriptFiles, overwrite: bool) -> _Plan:
        base = output_dir / job.name
        if job.name.is_absolute() or ".." in job.name.parts or base.name in ("", ".", ".."):
            raise ValueError(f"output name {job.name} would leave the output folder")  # a bug in find_inputs
        existing = () if overwrite else tuple(p for p in files.targets(base) if p.exists())
        formats = tuple(f for f, p in zip(files.formats, files.targets(base)) if p not in existing)
        return cls(job, base, formats, existing)

    def settings_differences(self, model: str, files: TranscriptFiles) -> list[str]:
        """How the settings recorded in the existing JSON output differ from this run's (none when nothing is
        kept, or no readable JSON output of ours records them)."""
        if not self.existing or files.options is None:
            return []
        record = self.base.with_name(f"{self.base.name}.json")
        try:
            document = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(document, dict):
            return []
        return settings_differences(document.get("model"), document.get(OPTIONS_FIELD), model, files.options)


# ---------------------------------------------------------------------------------------------------- the run


class _MeasuredAudio:
    """The container's ``AudioSource``, counting the seconds of audio read, for the progress bar's speed."""

    def __init__(self, inner: AudioSource) -> None:
        self.inner = inner
        self.seconds_read = 0.0

    def stream(self, path: Path) -> AudioBlocks:
        blocks = self.inner.stream(path)
        while True:
            try:
                block = next(blocks)
            except StopIteration as end:
                truncated: Truncation | None = end.value  # the input's
                return truncated
            self.seconds_read += len(block) / SAMPLE_RATE
            yield block


class _AudioClock:
    """Audio seconds behind ``done`` of ``total`` windows: the audio read so far, in the share of its windows that
    are decoded (inputs are read as the batches need them, so this is close)."""

    def __init__(self, audio: _MeasuredAudio) -> None:
        self.audio = audio

    def seconds(self, done: float, total: int) -> float:
        return self.audio.seconds_read * done / total if total else 0.0


class _Run:
    """Transcribes the planned inputs, writes their files and keeps the score."""

    def __init__(self, stderr: Console, files: TranscriptFiles, verbose: bool | None, several: bool) -> None:
        self.stderr = stderr
        self.files = files
        self.verbose = verbose
        self.several = several
        self.done = 0
        self.failed = 0
        self.truncated = 0  # written, but cut short
        self.audio_seconds = 0.0
        self.started = time.perf_counter()

    def execute(self, container: Container, plans: list[_Plan], options: TranscribeOptions, model: str) -> ExitCode:
        by_source = {plan.job.source: plan for plan in plans}
        show = self.verbose is not False and self.stderr.is_terminal
        with _progress_bar(self.stderr, show) as bar:
            task = bar.add_task(f"loading {model}", total=None, speed="")
            try:
                audio = _MeasuredAudio(container.audio())
                service = container.service(audio=audio)
                bar.update(task, description="transcribing")
                clock = _AudioClock(audio)
                self.started = time.perf_counter()

                def progress(done: float, total: int) -> None:
                    speed = clock.seconds(done, total) / max(time.perf_counter() - self.started, 1e-9)
                    bar.update(task, completed=done, total=total, speed=f"{speed:.1f} audio s/s")

                for result in service.transcribe_many(list(by_source), options, progress):
                    plan = by_source[Path(result.source)]
                    if result.error is not None:
                        self.failed += 1
                        error(self.stderr, str(result.error))
                    else:
                        assert result.transcript is not None
                        self._finish(plan, result.transcript)
            except (InvalidOptionError, UnsupportedLanguageError) as exc:
                error(self.stderr, str(exc))
                return ExitCode.USAGE
            except ModelLoadError as exc:
                error(self.stderr, str(exc))
                return ExitCode.MODEL
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (``_Terminated``)
                error(self.stderr, f"interrupted after {self.done} of {len(plans)} inputs; rerun to resume")
                return _interrupted(exc)
        return ExitCode.OK

    def _finish(self, plan: _Plan, transcript: Transcript) -> None:
        try:
            self.files.write(transcript, plan.base, plan.formats)
        except TranscriptionError as exc:  # OutputWriteError: the disk filled up, a folder became unwritable...
            self.failed += 1
            error(self.stderr, f"{plan.job.source}: {exc}")
            return
        self.done += 1
        self.audio_seconds += transcript.duration
        if transcript.truncated is not None:
            self.truncated += 1
            warn(self.stderr, f"{_shown(plan.job.source)} is {transcript.truncated.describe()}; transcribed what is there")
        if self.verbose:
            if self.several:
                typer.echo(f"==> {plan.job.source} <==")
            for segment in transcript.segments:
                typer.echo(f"[{_clock(segment.start)} --> {_clock(segment.end)}] {segment.text.strip()}")
                for word in segment.words:  # with word timestamps: each word on its own line, indented
                    typer.echo(f"    {word.start:8.2f} {word.end:8.2f}  {word.text.strip()}")

    def summary(self, skipped: int, failed: int) -> None:
        elapsed = time.perf_counter() - self.started
        parts = [f"{self.done} transcribed"]
        if skipped:
            parts.append(f"{skipped} skipped")
        if failed:
            parts.append(f"{failed} failed")
        if self.truncated:
            parts.append(f"{self.truncated} cut short")
        speed = f" ({self.audio_seconds / elapsed:.1f} s of audio per second)" if self.done and elapsed > 0 else ""
        note(self.stderr, f"{', '.join(parts)} in {elapsed:.1f} s{speed}")


def _shown(source: Path) -> str:
    """How stderr names an input: standard input as ``<stdin>``."""
    return STDIN_NAME if source == STDIN else str(source)


def _progress_bar(stderr: Console, show: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not show,
    )


def _clock(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole, milliseconds = divmod(milliseconds, 1000)
    return (f"{hours:02d}:" if hours else "") + f"{minutes:02d}:{whole:02d}.{milliseconds:03d}"


# -------------------------------------------------------------------------------------------------------- models


# `app models [--install NAME]`: the built-in models, installing them, the cache (entrypoints/models_command.py)
app.command("models")(models_command)


# ---------------------------------------------------------------------------------------------------------- eval

app.command("eval")(eval_command)  # `app eval DATASET`: WER and word-timing accuracy (entrypoints/eval_command.py)

# ------------------------------------------------------------------------------------------------------- corpus

# `app transcribe-corpus INPUT_DIR -o OUT`: a folder on Ray workers, with a manifest (entrypoints/corpus_command.py)
app.command("transcribe-corpus", epilog=CORPUS_EXIT_CODES_HELP)(transcribe_corpus)

# ------------------------------------------------------------------------------------------------------- serve

# `app serve`: an OpenAI-compatible server whose requests share decoder batches (entrypoints/serve_command.py)
app.command("serve", epilog=SERVE_EXIT_CODES_HELP)(serve)
