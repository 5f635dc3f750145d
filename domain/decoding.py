"""Whisper's decoding policy that needs no model: when a window's result is retried at the next temperature, when
it is silence, and the undecoded-tail rule, shared by the decoder (which finishes a segment in its window) and the
service (which decodes what is left as a window of its own). Pure, so it is tested without MLX."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from onepass_whisper.domain.audio import SAMPLE_RATE, DecodedChunk, Window
from onepass_whisper.domain.model import Segment, TranscribeOptions
from onepass_whisper.domain.windowing import sound_end

# heuristic: less than a second of a window left after its last segment holds no more than a word or two: the
# decoder need not finish a segment opened there, nor the service decode that rest again
CONTINUE_SECONDS = 1.0


def compression_ratio(text: str) -> float:
    """The text's UTF-8 length over its zlib-compressed length (0 for no text): high for repetitive output."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def is_silent(no_speech_prob: float, avg_logprob: float, options: TranscribeOptions) -> bool:
    """openai-whisper's rule: the window is silence (no segments) when the no-speech probability is above its
    threshold and the text is not likely enough to overrule it."""
    return (
        options.no_speech_threshold is not None
        and no_speech_prob > options.no_speech_threshold
        and not (options.logprob_threshold is not None and avg_logprob > options.logprob_threshold)
    )


def needs_fallback(text: str, no_speech_prob: float, avg_logprob: float, options: TranscribeOptions) -> bool:
    """openai-whisper's rule: decode again at the next temperature when too repetitive or too unlikely, unless the
    window is silence."""
    if options.no_speech_threshold is not None and no_speech_prob > options.no_speech_threshold:
        if options.logprob_threshold is not None and avg_logprob < options.logprob_threshold:
            return False  # silence: no fallback, the window is skipped
    ratio = compression_ratio(text.strip())
    if options.compression_ratio_threshold is not None and ratio > options.compression_ratio_threshold:
        return True
    return options.logprob_threshold is not None and avg_logprob < options.logprob_threshold


def best_attempt(attempts: Sequence[tuple[str, float]], options: TranscribeOptions) -> int:
    """Which of a window's attempts (text, average log-probability), one per temperature, to keep when every one
    failed its tests: the likeliest among those not too repetitive, else the likeliest of all (faster-whisper's
    choice). openai-whisper keeps the last, made at the highest temperature: the least likely by construction, and
    the one most often garbage (seven zero-length cues at the end of a French file that scored -1.22 at 0)."""
    if not attempts:
        raise ValueError("no attempt to choose from")  # a bug: a window is decoded at least once
    limit = options.compression_ratio_threshold
    fluent = [i for i, (text, _) in enumerate(attempts) if limit is None or compression_ratio(text.strip()) <= limit]
    return max(fluent or range(len(attempts)), key=lambda i: attempts[i][1])


# -- the undecoded tail ---------------------------------------------------------------------------------------
#
# Whisper may emit end-of-text at a timestamp well before the window's end although speech goes on; sequential
# transcription then seeks to that point and decodes from there. Here windows are decoded in parallel, so:
# 1. the decoder may not end a sequence with a segment opened while more than CONTINUE_SECONDS of sound follow the
#    opening in its window (``finish_until``): the segment is finished in the same pass;
# 2. what that leaves (a sequence cut at the length limit, a segment opened in the window's last second) the
#    service decodes again as a window of its own (``may_have_undecoded_tail``, ``undecoded_tail``).


def finish_until(window: Window) -> float:
    """Seconds into ``window`` before which a segment opened must be finished in the window: more than
    ``CONTINUE_SECONDS`` of sound follow it (none in silence, whatever the model says)."""
    return min(sound_end(window.samples), window.duration) - CONTINUE_SECONDS


def may_have_undecoded_tail(chunk: DecodedChunk) -> bool:
    """Whether the model stopped early in ``chunk``'s window, after progress, with speech possibly left.

    As openai-whisper's ``transcribe``: not when the output ended with a lone timestamp (the model said the speech
    ended: on silence, decoding the rest again only repeats a hallucination), and only after progress (the last
    segment ends after the window's start), so re-decoding always ends.
    """
    if not chunk.segments or chunk.speech_ended:
        return False
    end = chunk.segments[-1].end
    return end > 0.0 and chunk.window.duration - end >= CONTINUE_SECONDS


def undecoded_tail(chunk: DecodedChunk, segments: Sequence[Segment]) -> Window | None:
    """The rest of ``chunk``'s window after its last segment and its last timed word (``segments``, file times),
    as a window of its own: windows here are decoded in parallel, so the rest is decoded as a new one."""
    window = chunk.window
    ends = [word.end for segment in segments for word in segment.words]  # file times
    start = max([chunk.segments[-1].end, *(end - window.offset for end in ends)])
    if window.duration - start < CONTINUE_SECONDS:
        return None
    cut = int(np.ceil(start * SAMPLE_RATE))
    # on the sample grid, and not before a word already timed (which the float arithmetic could put a 1e-15 s later)
    offset = max([(window.first_sample + cut) / SAMPLE_RATE, *ends])
    return Window(source=window.source, index=window.index, offset=offset, samples=window.samples[cut:])
