"""The OpenAI audio API's request fields and response shapes, translated to and from the domain's.

Field names and shapes follow OpenAI's ``/v1/audio/transcriptions`` reference: ``json`` is ``{"text"}``;
``verbose_json`` adds ``task``, ``language`` (the language's English name, lower case), ``duration``, and
``segments`` and/or ``words`` as ``timestamp_granularities[]`` asks (``segment`` when none is given); ``text``,
``srt`` and ``vtt`` are the project's own writers' output. Errors are ``{"error": {"message", "type", "param",
"code"}}``. Additions to OpenAI's shapes: ``language_probability`` of the whole and each segment's ``language``
and ``language_probability`` (the detector's, null where the language was given or the model is English-only).
"""

from __future__ import annotations

from typing import Any, Final

from onepass_whisper.adapters.mlx.languages import language_names
from onepass_whisper.adapters.writers import render
from onepass_whisper.domain.errors import InvalidOptionError
from onepass_whisper.domain.model import Task, TranscribeOptions, Transcript

RESPONSE_FORMATS: Final = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES: Final = ("word", "segment")
DEFAULT_TEMPERATURES: Final = TranscribeOptions().temperatures  # OpenAI: 0 = "automatically increase as needed"
OPENAI_MODEL_ALIAS: Final = "whisper-1"  # what OpenAI's examples send; served by the loaded model


def error_body(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def decoding_options(
    task: Task, language: str | None, prompt: str | None, temperature: str | None
) -> TranscribeOptions:
    """The form's fields as ``TranscribeOptions`` (word timestamps always on: they come from the same pass, and
    requests with equal options share batches); ``InvalidOptionError`` names the bad field."""
    temperatures = DEFAULT_TEMPERATURES
    if temperature not in (None, ""):
        try:
            value = float(temperature)
        except ValueError:
            raise InvalidOptionError("temperature", f"{temperature!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise InvalidOptionError("temperature", f"must be between 0 and 1, got {value}")
        if value > 0.0:
            temperatures = (value,)
    return TranscribeOptions(
        language=(language or "").strip().lower() or None,
        task=task,
        initial_prompt=prompt or None,
        temperatures=temperatures,
    )


def response_format(value: str | None) -> str:
    fmt = (value or "json").strip()
    if fmt not in RESPONSE_FORMATS:
        raise InvalidOptionError("response_format", f"{fmt!r} is not one of {', '.join(RESPONSE_FORMATS)}")
    return fmt


def granularities(values: list[str]) -> tuple[str, ...]:
    for value in values:
        if value not in GRANULARITIES:
            raise InvalidOptionError("timestamp_granularities[]", f"{value!r} is not one of word, segment")
    return tuple(values) or ("segment",)


def json_body(transcript: Transcript) -> dict[str, Any]:
    return {"text": transcript.text}


def verbose_body(transcript: Transcript, task: Task, wanted: tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": task,
        "language": language_name(transcript.language),
        "language_probability": transcript.language_probability,  # an addition: null where not detected
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if "segment" in wanted:
        body["segments"] = [
            {
                "id": number,
                "seek": round(segment.start * 100),  # 10-ms mel frames, as whisper counts
                "start": round(segment.start, 3),
                "end": round(segment.end, 3),
                "text": segment.text,
                "tokens": [],  # the decoder's token ids are not kept past the words
                "temperature": segment.temperature,
                "avg_logprob": segment.avg_logprob,
                "compression_ratio": segment.compression_ratio,
                "no_speech_prob": segment.no_speech_prob,
                "language": language_name(segment.language) if segment.language else None,  # an addition
                "language_probability": segment.language_probability,  # an addition: null where not detected
            }
            for number, segment in enumerate(transcript.segments)
        ]
    if "word" in wanted:
        body["words"] = [
            {"word": word.text.strip(), "start": round(word.start, 3), "end": round(word.end, 3)}
            for word in transcript.words
        ]
    return body


def subtitle_text(transcript: Transcript, fmt: str) -> str:
    """``text``, ``srt`` or ``vtt``: what ``app transcribe`` writes in its txt, srt and vtt files."""
    return render(transcript, "txt" if fmt == "text" else fmt)


def language_name(code: str) -> str:
    """OpenAI's verbose_json names the language (``english``); whisper's own table, the code if unknown."""
    return language_names().get(code, code)
