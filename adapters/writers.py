"""Transcript files: txt, srt, vtt, tsv and json, written by mlx-whisper's own writers, atomically.

The writers (``mlx_whisper.writers``, the same as openai-whisper's) read a result dict; ``result_dict`` builds it
from the domain ``Transcript`` in this project's JSON schema (``docs/cli.md``):

    {"text", "language", "language_probability", "doubts", "duration", "model", "options", "truncated",
     "segments": [{"id", "start", "end", "text", "avg_logprob", "compression_ratio", "no_speech_prob",
                   "temperature", "language", "language_probability",
                   "words": [{"word", "start", "end", "probability"}]}]}

Times are seconds (rounded to the millisecond); ``words`` is present only with word timestamps. The dict is handed
to ``writer.write_result(result, file=...)`` with a temporary file in the destination folder, which is then renamed
over the destination (``os.replace``): a reader, or a rerun after an interruption, sees either the old file or the
complete new one, never a truncated transcript.

``mlx_whisper/writers.py`` needs only the standard library; ``adapters/mlx/writers.py`` imports it without the
package's ``__init__`` (MLX, numba, scipy.signal), on the first write.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from attrs import frozen

from onepass_whisper.domain.audio import Truncation
from onepass_whisper.domain.errors import OutputWriteError
from onepass_whisper.domain.model import Doubt, Segment, Transcript, Word

FORMATS: Final = ("txt", "srt", "vtt", "tsv", "json")  # the order of "all"


@frozen
class SubtitleLayout:
    """How srt and vtt cues are cut, with openai-whisper's meanings (each needs word timestamps).

    ``max_line_width``: characters per line before a line break; ``max_line_count``: lines per cue (only with
    ``max_line_width``); ``max_words_per_line``: words per cue (ignored with ``max_line_width``);
    ``highlight_words``: one cue per word, the spoken word underlined (``<u>``).
    """

    highlight_words: bool = False
    max_line_width: int | None = None
    max_line_count: int | None = None
    max_words_per_line: int | None = None

    def as_options(self) -> dict[str, Any]:
        return {
            "highlight_words": self.highlight_words,
            "max_line_width": self.max_line_width,
            "max_line_count": self.max_line_count,
            "max_words_per_line": self.max_words_per_line,
        }


def result_dict(
    transcript: Transcript, *, words: bool = True, options: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """``transcript`` in the JSON schema; ``words=False`` leaves each segment's ``words`` key out; ``options``, the
    settings that made it (``application.settings``), is recorded as ``"options"`` when given."""
    result = {
        "text": transcript.text,
        "language": transcript.language,
        "language_probability": _probability(transcript.language_probability),
        "doubts": [_doubt(doubt) for doubt in transcript.doubts],
        "segments": [_segment(i, segment, words) for i, segment in enumerate(transcript.segments)],
        "model": transcript.model,
        "duration": _seconds(transcript.duration),
        "truncated": _truncation(transcript.truncated),
    }
    if options is not None:
        result["options"] = dict(options)
    return result


def _truncation(truncated: Truncation | None) -> dict[str, Any] | None:
    """null for a whole input; for one cut short, the length its header declares (null where the data broke off
    without one) and the length read (the same as ``duration``)."""
    if truncated is None:
        return None
    expected = truncated.expected_duration
    return {
        "expected_duration": None if expected is None else _seconds(expected),
        "duration": _seconds(truncated.duration),
    }


def _segment(number: int, segment: Segment, words: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": number,
        "start": _seconds(segment.start),
        "end": _seconds(segment.end),
        "text": segment.text,
    }
    if words:
        out["words"] = [_word(word) for word in segment.words]
    out |= {
        "avg_logprob": float(segment.avg_logprob),
        "compression_ratio": float(segment.compression_ratio),
        "no_speech_prob": float(segment.no_speech_prob),
        "temperature": float(segment.temperature),
        "language": segment.language,
        "language_probability": _probability(segment.language_probability),
    }
    return out


def _probability(value: float | None) -> float | None:
    """A detection's probability to 4 places; null where the language was not detected (given, or English-only)."""
    return None if value is None else round(float(value), 4)


def _doubt(doubt: Doubt) -> dict[str, Any]:
    return {"kind": doubt.kind, "score": None if doubt.score is None else round(float(doubt.score), 4)}


def _word(word: Word) -> dict[str, Any]:
    return {
        "word": word.text,
        "start": _seconds(word.start),
        "end": _seconds(word.end),
        "probability": round(float(word.probability), 4),
    }


def _seconds(value: float) -> float:
    return round(float(value), 3)  # milliseconds: what srt, vtt and tsv can say; numpy floats become JSON floats


@frozen
class TranscriptFiles:
    """Writes a transcript as ``<name>.<format>`` files, each atomically (implements the CLI's writer role)."""

    formats: tuple[str, ...] = FORMATS
    layout: SubtitleLayout = SubtitleLayout()
    word_timestamps: bool = True
    options: Mapping[str, object] | None = None  # the settings recorded in the JSON file (``result_dict``)

    def targets(self, name: Path) -> list[Path]:
        """The files ``write(transcript, name)`` writes: ``name`` plus each format's extension."""
        return [name.with_name(f"{name.name}.{fmt}") for fmt in self.formats]

    def write(self, transcript: Transcript, name: Path, formats: Sequence[str] | None = None) -> list[Path]:
        """Write ``formats`` (default: all of ``self.formats``) of ``transcript``; ``OutputWriteError`` on failure.

        ``name`` is the path without extension (``out/talk`` gives ``out/talk.srt``); missing folders are made.
        """
        writers = _mlx_writers()
        result = result_dict(transcript, words=self.word_timestamps, options=self.options)
        options = self.layout.as_options()
        written = []
        for fmt in self.formats if formats is None else formats:
            writer = writers[fmt](str(name.parent))
            path = name.with_name(f"{name.name}.{fmt}")
            write_atomically(path, lambda file: writer.write_result(result, file=file, options=options))
            written.append(path)
        return written


def write_atomically(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write ``path`` through a temporary file in its folder renamed over it; ``OutputWriteError`` on failure.

    An interrupt (Ctrl-C, or SIGTERM as the CLI handles it) at any point leaves no temporary file: the name is
    chosen before the file is made, so an interrupt right after ``os.open`` (where ``tempfile.mkstemp`` would not
    have returned the name yet) still knows what to remove.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(path, _reason(exc)) from exc
    while True:
        temporary = str(path.with_name(f".{path.name}.{secrets.token_hex(8)}.part"))
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            continue  # another writer's temporary (a 1 in 2^64 draw): never touched
        except OSError as exc:
            raise OutputWriteError(path, _reason(exc)) from exc
        except BaseException:  # an interrupt, maybe just after the file was made: the name is ours
            _remove(temporary)
            raise
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide the transcript from other users
        os.replace(temporary, path)
    except OSError as exc:
        _remove(temporary)
        raise OutputWriteError(path, _reason(exc)) from exc
    except BaseException:  # KeyboardInterrupt included: never leave a half-written temporary file behind
        _remove(temporary)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _mlx_writers() -> dict[str, Callable[[str], Any]]:
    """mlx-whisper's writer classes by format (``adapters/mlx/writers.py``)."""
    from onepass_whisper.adapters.mlx.writers import whisper_writers

    return whisper_writers()


def render(transcript: Transcript, fmt: str, layout: SubtitleLayout = SubtitleLayout(), words: bool = True) -> str:
    """``transcript`` as the text of a ``fmt`` file (txt, srt, vtt, tsv or json), as ``TranscriptFiles`` writes it:
    what a server returns instead of a file."""
    writer = _mlx_writers()[fmt](".")
    buffer = io.StringIO()
    writer.write_result(result_dict(transcript, words=words), file=buffer, options=layout.as_options())
    return buffer.getvalue()
