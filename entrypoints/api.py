"""The library entry point: transcribe a file or an array into the domain ``Transcript``.

    from onepass_whisper.entrypoints.api import Transcriber, transcribe

    transcript = transcribe("talk.wav")                  # loads tiny.en for this one call
    print(transcript.text, transcript.segments[0].words[0])

    transcriber = Transcriber("base", batch_size=16)     # keeps the model loaded across calls
    for path in paths:
        print(transcriber.transcribe(path, language="de").text)
    transcriber.transcribe(samples)                      # numpy array: 16 kHz mono float32
    transcriber.transcribe(samples, sample_rate=44_100)  # any rate: resampled; int16 PCM is scaled by 1/32768

Failures raise ``domain.errors`` exceptions (``AudioLoadError``, ``ModelLoadError``, ``InvalidOptionError``,
``UnsupportedLanguageError``, all ``TranscriptionError``); nothing here prints or exits. Tests swap adapters through
the container (``Transcriber(container=...)``, see ``docs/cli.md``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import TypedDict

import attrs
import numpy as np
from numpy.typing import NDArray

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover - typing_extensions comes with typer
    from typing_extensions import Unpack

from onepass_whisper.adapters.audio_array import waveform_from_array
from onepass_whisper.application.transcription import FileResult, TranscriptionService, in_input_order
from onepass_whisper.domain.audio import SAMPLE_RATE
from onepass_whisper.domain.errors import InvalidOptionError
from onepass_whisper.domain.model import Doubt, Segment, Task, TranscribeOptions, Transcript, Word
from onepass_whisper.entrypoints.container import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL,
    PHONETIC_MISSING,
    Container,
    phonetic_available,
)

__all__ = ["Doubt", "FileResult", "Options", "Segment", "Transcriber", "Transcript", "Word", "transcribe"]

Audio = str | PathLike[str] | NDArray[np.generic] | Sequence[float]


class Options(TypedDict, total=False):
    """Decoding options, as ``TranscribeOptions`` (openai-whisper's names, meanings and defaults)."""

    language: str | None
    task: Task
    initial_prompt: str | None
    temperatures: Sequence[float]
    compression_ratio_threshold: float | None
    logprob_threshold: float | None
    no_speech_threshold: float | None
    word_timestamps: bool
    suppress_blank: bool
    suppress_tokens: str
    max_new_tokens: int | None


class Transcriber:
    """A loaded model and its adapters, reused by every call.

    ``model``: a built-in name (``tiny.en``, ``base``), a model folder or a Hugging Face repository id.
    ``container``: the composition root to use (tests pass one with fake adapters); it is configured with
    ``model``, ``batch_size``, ``refine`` and ``cache_dir``. ``refine=False``: whisper's plain DTW word times,
    without the model's lag correction and the audio-based refinement (``docs/alignment.md``). ``phonetic=True``:
    English words' edges from pocketsphinx's forced alignment where they agree with the attention's (needs the
    ``phonetic`` extra; ``InvalidOptionError`` without it). ``char_timing=True``: word starts from a second
    decoder pass that spells the decoded words one character a token (any language; closer edges with base, worse
    with tiny.en; a CPU run of dense speech takes ~1.25x as long: ``docs/performance.md`` #97). The model is loaded
    here: a ``ModelLoadError`` comes now, not on the first call.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        refine: bool = True,
        phonetic: bool = False,
        char_timing: bool = False,
        cache_dir: Path | None = None,
        container: Container | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidOptionError("batch_size", f"must be at least 1, got {batch_size}")
        if phonetic and not phonetic_available():
            raise InvalidOptionError("phonetic", PHONETIC_MISSING)
        self.container = Container() if container is None else container
        self.container.config.model.from_value(model)
        self.container.config.batch_size.from_value(batch_size)
        self.container.config.refine.from_value(refine)
        self.container.config.phonetic.from_value(phonetic)
        self.container.config.char_timing.from_value(char_timing)
        if cache_dir is not None:
            self.container.config.cache_dir.from_value(cache_dir)
        self.service: TranscriptionService = self.container.service()

    @property
    def model(self) -> str:
        return self.service.decoder.name

    def transcribe(self, audio: Audio, *, sample_rate: int | None = None, **options: Unpack[Options]) -> Transcript:
        """Transcribe a file path (audio or video), or samples in memory.

        Samples: a numpy array (or a list of numbers) at ``sample_rate`` Hz (default 16000; another rate is
        resampled), float in [-1, 1] (any float dtype) or int16/int32 PCM (scaled by 1/32768 and 1/2^31, as
        whisper's ``load_audio`` does), 1-D mono or 2-D (frames, channels) / (channels, frames), channels averaged;
        NaN and infinite samples become silence. Anything else is an ``AudioLoadError``; a bad ``sample_rate`` an
        ``InvalidOptionError``. A file's rate is its own: ``sample_rate`` is for samples only.
        """
        settings = _options(options)
        if isinstance(audio, str | PathLike):
            if sample_rate is not None:
                raise InvalidOptionError("sample_rate", "is for samples in memory; a file's rate is read from it")
            return self.service.transcribe(Path(audio), settings)
        rate = SAMPLE_RATE if sample_rate is None else sample_rate
        return self.service.transcribe_waveform(waveform_from_array(audio, rate), settings)

    def transcribe_many(
        self, paths: Sequence[str | PathLike[str]], *, ordered: bool = False, **options: Unpack[Options]
    ) -> Iterator[FileResult]:
        """Transcribe files with their windows sharing batches; yields one ``FileResult`` per path (a transcript
        or the ``TranscriptionError`` that stopped that file).

        ``ordered=False`` (the default): each as soon as it is done, which is not input order (a short file
        after a long one finishes first); match them by ``result.source``. ``ordered=True``: in the order of
        ``paths``, each held back until those before it are done (as ``Executor.map``).
        """
        sources = [Path(p) for p in paths]
        results = self.service.transcribe_many(sources, _options(options))
        return in_input_order(results, sources) if ordered else results


def transcribe(audio: Audio, model: str = DEFAULT_MODEL, **options: Unpack[Options]) -> Transcript:
    """Transcribe one file or array with ``model``, loaded for this call (use ``Transcriber`` for several)."""
    return Transcriber(model).transcribe(audio, **options)


def _options(options: Options) -> TranscribeOptions:
    unknown = set(options) - {a.name for a in attrs.fields(TranscribeOptions)}
    if unknown:  # callers without a type checker
        raise InvalidOptionError(", ".join(sorted(unknown)), "unknown option")
    if options.get("task", "transcribe") not in ("transcribe", "translate"):
        raise InvalidOptionError("task", f"expected 'transcribe' or 'translate', got {options.get('task')!r}")
    try:
        return TranscribeOptions(**options)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(", ".join(sorted(options)) or "options", str(exc)) from exc
