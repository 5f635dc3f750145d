"""A transcript's language and what its reader should doubt: pure rules over its segments, shared by the service
and the server's scheduler, so they are tested without a model.

A file's language is that of most of its speech: each segment carries the language its window was decoded in, and
the languages are weighed by the segments' durations (a short window in another language, or a window holding a
word or two, does not outvote long speech).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from attrs import frozen

from onepass_whisper.domain.audio import Truncation
from onepass_whisper.domain.model import Doubt, Segment, Transcript

# heuristic: a detection below this probability is doubted. Whisper's detector is a softmax over ~100 languages;
# below 1/2 the model finds the others together likelier than its pick, but wrong picks were measured up to ~0.7 on
# synthetic speech while right ones started above it (docs/reliability.md, "Languages")
UNCERTAIN_LANGUAGE = 0.7
# heuristic: an English-only model decoding speech at a mean token log-probability below this (by duration) is
# likely hearing another language: openai-whisper's own bar for a failed window (``logprob_threshold``), here over
# the whole file; measured hits and false alarms: docs/reliability.md, "Languages"
NOT_ENGLISH_LOGPROB = -1.0


@frozen
class SpokenLanguage:
    """The language of most of a file's speech and the detector's probability of it there (by duration; None
    where any of its segments had no detection)."""

    code: str
    probability: float | None


def main_language(segments: Sequence[Segment]) -> SpokenLanguage | None:
    """The language of the longest total speech among ``segments`` (those that name one); None where none does.

    Ties go to the language heard first. A segment of no length (none is written, but a caller may pass one)
    weighs as little as the shortest real one would.
    """
    weights: dict[str, float] = defaultdict(float)
    probabilities: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for segment in segments:
        if not segment.language:
            continue
        weight = max(segment.duration, 1e-3)
        weights[segment.language] += weight
        probabilities[segment.language].append((weight, segment.language_probability))
    if not weights:
        return None
    code = max(weights, key=lambda language: weights[language])  # dicts keep order: the first of equals wins
    scored = probabilities[code]
    if any(p is None for _, p in scored):
        return SpokenLanguage(code, None)
    probability = sum(w * (p or 0.0) for w, p in scored) / sum(w for w, _ in scored)
    return SpokenLanguage(code, probability)


def mean_logprob(segments: Sequence[Segment]) -> float | None:
    """The segments' average token log-probability weighed by their durations (None for no segment)."""
    if not segments:
        return None
    weights = [max(segment.duration, 1e-3) for segment in segments]
    return sum(w * s.avg_logprob for w, s in zip(weights, segments)) / sum(weights)


def repetitive_share(segments: Sequence[Segment], limit: float | None) -> float:
    """The share of the segments' time (0-1) decoded into text more repetitive than ``limit`` (a compression
    ratio): windows whose every attempt failed that test (0 without a limit)."""
    if limit is None or not segments:
        return 0.0
    weights = [max(segment.duration, 1e-3) for segment in segments]
    return sum(w for w, s in zip(weights, segments) if s.compression_ratio > limit) / sum(weights)


def doubts(
    segments: Sequence[Segment],
    language: str,
    probability: float | None,
    *,
    english_only: bool,
    compression_limit: float | None = None,
) -> tuple[Doubt, ...]:
    """What the reader of a transcript of ``segments`` in ``language`` should doubt (``Doubt``'s kinds):

    no speech found; a language detected with a ``probability`` below ``UNCERTAIN_LANGUAGE``; or, from an
    ``english_only`` model, speech decoded at a mean log-probability below ``NOT_ENGLISH_LOGPROB``, or more than
    half of it into text more repetitive than ``compression_limit`` even at the last temperature (an English-only
    model on Japanese loops on a phrase it is sure of).
    """
    if not segments:
        return (Doubt("no_speech", language),)
    found: list[Doubt] = []
    if probability is not None and probability < UNCERTAIN_LANGUAGE:
        found.append(Doubt("uncertain_language", language, probability))
    score = mean_logprob(segments)
    if english_only and score is not None:
        if score < NOT_ENGLISH_LOGPROB or repetitive_share(segments, compression_limit) > 0.5:
            found.append(Doubt("not_english", language, score))
    return tuple(found)


def transcript_of(
    segments: Sequence[Segment],
    duration: float,
    *,
    model: str,
    fallback_language: str,
    english_only: bool,
    compression_limit: float | None = None,
    truncated: Truncation | None = None,
) -> Transcript:
    """The transcript of one input's ``segments`` (in time order): in the language of most of its speech (else
    ``fallback_language``: the one asked for, or the first window's), with that language's probability and the
    reader's ``doubts`` (``compression_limit``: the options' compression-ratio threshold)."""
    spoken = main_language(segments)
    language = spoken.code if spoken is not None else fallback_language
    probability = spoken.probability if spoken is not None else None
    return Transcript(
        segments=segments,
        language=language,
        duration=duration,
        model=model,
        truncated=truncated,
        language_probability=probability,
        doubts=doubts(segments, language, probability, english_only=english_only, compression_limit=compression_limit),
    )
