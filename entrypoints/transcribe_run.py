"""``app transcribe``'s run: the planned inputs through the transcription service, each transcript written as it
comes, and the score kept (done, failed, cut short) for the summary and the exit code."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console

from onepass_whisper.adapters.writers import TranscriptFiles
from onepass_whisper.domain.errors import (
    InvalidOptionError,
    ModelLoadError,
    TranscriptionError,
    UnsupportedLanguageError,
)
from onepass_whisper.domain.model import Doubt, TranscribeOptions, Transcript
from onepass_whisper.domain.ports import STDIN, STDIN_NAME
from onepass_whisper.entrypoints.console import error, note, warn
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.exit_codes import ExitCode
from onepass_whisper.entrypoints.output_plan import OutputPlan
from onepass_whisper.entrypoints.progress_display import AudioClock, MeasuredAudio, progress_bar, windows_progress


class TranscribeRun:
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

    def execute(
        self, container: Container, plans: Sequence[OutputPlan], options: TranscribeOptions, model: str
    ) -> ExitCode:
        by_source = {plan.job.source: plan for plan in plans}
        show = self.verbose is not False and self.stderr.is_terminal
        with progress_bar(self.stderr, show) as bar:
            task = bar.add_task(f"loading {model}", total=None, speed="")
            try:
                audio = MeasuredAudio(container.audio())
                service = container.service(audio=audio)
                bar.update(task, description="transcribing")
                self.started = time.perf_counter()
                progress = windows_progress(bar, task, AudioClock(audio), self.started)
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
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (``signals.Terminated``)
                error(self.stderr, f"interrupted after {self.done} of {len(plans)} inputs; rerun to resume")
                return ExitCode.interrupted(exc)
        return ExitCode.OK

    def _finish(self, plan: OutputPlan, transcript: Transcript) -> None:
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
            warn(
                self.stderr,
                f"{_shown(plan.job.source)} is {transcript.truncated.describe()}; transcribed what is there",
            )
        for doubt in transcript.doubts:
            warn(self.stderr, doubt_line(doubt, _shown(plan.job.source), transcript.model))
        if self.verbose:
            if self.several:
                typer.echo(f"==> {plan.job.source} <==")
            _echo(transcript)

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


def _echo(transcript: Transcript) -> None:
    """``--verbose``: the transcript on stdout, a line per segment; with word timestamps each word indented."""
    for segment in transcript.segments:
        typer.echo(f"[{_clock(segment.start)} --> {_clock(segment.end)}] {segment.text.strip()}")
        for word in segment.words:
            typer.echo(f"    {word.start:8.2f} {word.end:8.2f}  {word.text.strip()}")


def doubt_line(doubt: Doubt, name: str, model: str) -> str:
    """A transcript's ``Doubt`` as one warning line that names the input and what to try."""
    if doubt.kind == "no_speech":
        return (
            f"{name}: no speech found, the transcript is empty; if it holds speech, give its language with"
            " --language (for languages other than English, a multilingual model: --model base)"
        )
    if doubt.kind == "uncertain_language":
        probability = f"{doubt.score:.2f}" if doubt.score is not None else "?"
        return (
            f"{name}: its language was detected as {_language(doubt.language)} with probability {probability} only;"
            " if that is wrong, give it with --language"
        )
    score = f"{doubt.score:.2f}" if doubt.score is not None else "?"
    return (
        f"{name}: the speech does not score as English for the English-only model {model} (mean log-probability"
        f" {score}); for other languages use a multilingual model: --model base"
    )


def _language(code: str) -> str:
    """``fr`` as ``French (fr)``, whisper's name for it; the code alone where it has none."""
    from onepass_whisper.adapters.mlx.languages import language_names

    name = language_names().get(code)
    return f"{name.title()} ({code})" if name else code


def _shown(source: Path) -> str:
    """How stderr names an input: standard input as ``<stdin>``."""
    return STDIN_NAME if source == STDIN else str(source)


def _clock(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole, milliseconds = divmod(milliseconds, 1000)
    return (f"{hours:02d}:" if hours else "") + f"{minutes:02d}:{whole:02d}.{milliseconds:03d}"
