"""``app transcribe``'s decoding and subtitle options, parsed and checked: the ``TranscribeOptions`` of a run, or
a usage error (exit 2) naming the option."""

from __future__ import annotations

from enum import Enum

import typer
from rich.console import Console

from onepass_whisper.adapters.writers import SubtitleLayout
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.console import warn


class TaskChoice(str, Enum):
    """``--task``'s values, an Enum so that Click lists and checks them (``domain.model.Task`` is their type)."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


def optional_float(value: str | float | None, option: str) -> float | None:
    """A number, or None for ``none`` (the threshold options: ``none`` turns the test off)."""
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


def decoding_options(
    *,
    language: str | None,
    task: TaskChoice,
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


def check_subtitle_options(layout: SubtitleLayout, word_timestamps: bool, stderr: Console) -> None:
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
