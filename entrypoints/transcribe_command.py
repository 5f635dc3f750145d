"""``app transcribe PATH...``: the command, its options, and the steps of a run: find the inputs, check the
model and the options, plan the outputs (``output_plan``), transcribe and write them (``transcribe_run``), and the
exit code (``exit_codes``). SIGTERM is handled as Ctrl-C throughout (``signals``).

Adapters come from the ``Container`` in ``ctx.obj`` (tests pass one with fakes); they are resolved explicitly, not
injected, because Typer would turn an injected parameter into an option. Transcripts (``--verbose``) go to stdout;
progress, notes and errors go to stderr, each error on one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from onepass_whisper.adapters.writers import FORMATS, SubtitleLayout, TranscriptFiles
from onepass_whisper.application.settings import settings_record
from onepass_whisper.domain.errors import InvalidOptionError, ModelLoadError, UnsupportedLanguageError
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.console import check_output_dir, error
from onepass_whisper.entrypoints.container import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, Container
from onepass_whisper.entrypoints.exit_codes import ExitCode
from onepass_whisper.entrypoints.inputs import AUDIO_SUFFIXES, find_inputs
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
from onepass_whisper.entrypoints.output_plan import plan_outputs
from onepass_whisper.entrypoints.signals import terminate_as_interrupt
from onepass_whisper.entrypoints.transcribe_options import (
    TaskChoice,
    check_subtitle_options,
    decoding_options,
    optional_float,
)
from onepass_whisper.entrypoints.transcribe_run import TranscribeRun


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
        TaskChoice,
        typer.Option(
            metavar="TASK",
            help="[b]transcribe[/b], or [b]translate[/b] into English.",
            rich_help_panel="Decoding",
        ),
    ] = TaskChoice.TRANSCRIBE,
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
            parser=lambda value: optional_float(value, "--compression-ratio-threshold"),
            metavar="FLOAT|none",
            help="Retry at the next temperature when the text's gzip compression ratio is above this.",
            rich_help_panel="Decoding",
        ),
    ] = 2.4,
    logprob_threshold: Annotated[
        float | None,
        typer.Option(
            parser=lambda value: optional_float(value, "--logprob-threshold"),
            metavar="FLOAT|none",
            help="Retry at the next temperature when the average token log probability is below this.",
            rich_help_panel="Decoding",
        ),
    ] = -1.0,
    no_speech_threshold: Annotated[
        float | None,
        typer.Option(
            parser=lambda value: optional_float(value, "--no-speech-threshold"),
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
    char_timing: CharTimingOption = False,
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Where transcripts go, as [i]<input stem>.<format>[/i]; a folder input's sub-folders are mirrored.",
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
    check_subtitle_options(layout, word_timestamps, stderr)
    check_phonetic(phonetic)
    options = decoding_options(
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
    recorded = settings_record(options, refine=refine, phonetic=phonetic, char_timing=char_timing)
    files = TranscriptFiles(formats=formats, layout=layout, word_timestamps=word_timestamps, options=recorded)
    with terminate_as_interrupt():
        try:
            code = _transcribe(
                ctx.obj,
                stderr,
                paths,
                options,
                files,
                model=model,
                batch_size=batch_size,
                refine=refine,
                phonetic=phonetic,
                char_timing=char_timing,
                output_dir=output_dir,
                overwrite=overwrite,
                verbose=verbose,
            )
        except KeyboardInterrupt as exc:  # before or after the run itself: nothing half-written either way
            error(stderr, "interrupted; rerun to resume")
            code = ExitCode.interrupted(exc)
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
    char_timing: bool,
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
    container.config.char_timing.from_value(char_timing)
    if jobs:  # before anything is skipped: a bad model or option is an error whatever exists already
        checked = _check_model_and_options(container, stderr, options)
        if isinstance(checked, ExitCode):
            return checked
        model = checked  # as the transcripts record it
    plans = plan_outputs(jobs, output_dir, files, model=model, overwrite=overwrite, stderr=stderr, verbose=verbose)
    run = TranscribeRun(stderr=stderr, files=files, verbose=verbose, several=len(plans.todo) > 1)
    code = run.execute(container, plans.todo, options, model) if plans.todo else ExitCode.OK
    failed = run.failed + len(inputs.missing) + len(inputs.empty_folders) + plans.stale
    if verbose is not False and code is ExitCode.OK:
        run.summary(skipped=plans.skipped, failed=failed)
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
