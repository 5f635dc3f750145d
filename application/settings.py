"""What made a transcript: the model and the options that change its words or times, recorded in its JSON file.

A rerun compares the record of existing outputs with its own settings, so that outputs of another model or other
options are never taken for this run's (``docs/cli.md``, "Settings"). Only what changes the transcript is recorded:
the subtitle layout options change how srt and vtt are cut, not what is said or when, and the batch size only
which windows share a batch.
"""

from __future__ import annotations

from collections.abc import Mapping

from onepass_whisper.domain.model import TranscribeOptions

# the JSON field that holds the options (the model has its own field, "model")
OPTIONS_FIELD = "options"


def settings_record(
    options: TranscribeOptions, *, refine: bool, phonetic: bool, char_timing: bool = False
) -> dict[str, object]:
    """The options that made a transcript, as JSON values, under the CLI's option names (dashes as underscores)."""
    return {
        "language": options.language,
        "task": options.task,
        "initial_prompt": options.initial_prompt,
        "temperature": list(options.temperatures),
        "compression_ratio_threshold": options.compression_ratio_threshold,
        "logprob_threshold": options.logprob_threshold,
        "no_speech_threshold": options.no_speech_threshold,
        "word_timestamps": options.word_timestamps,
        "refine": refine,
        "phonetic": phonetic,
        "char_timing": char_timing,
    }


def settings_differences(
    recorded_model: object, recorded: object, model: str, wanted: Mapping[str, object]
) -> list[str]:
    """What differs between a JSON file's record and this run's settings, one ``name X (now Y)`` each.

    A field the record lacks (a file written before it was recorded) is not a difference: nothing is known of it.
    """
    differences = []
    if isinstance(recorded_model, str) and recorded_model != model:
        differences.append(f"model {recorded_model} (now {model})")
    if isinstance(recorded, Mapping):
        for name, value in wanted.items():
            if name in recorded and _normal(recorded[name]) != _normal(value):
                differences.append(f"{name} {_shown(recorded[name])} (now {_shown(value)})")
    return differences


def _normal(value: object) -> object:
    """JSON's view of a value: tuples are lists, integers that are floats compare equal (``1`` and ``1.0``)."""
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(f"{v:g}" if isinstance(v, float | int) else str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
