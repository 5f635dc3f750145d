"""Whisper's decoding policy that needs no model: when a window's result is retried at the next temperature, when
it is silence, and the undecoded-tail rule, shared by the decoder (which finishes a segment in its window) and the
service (which decodes what is left as a window of its own). Pure, so it is tested without MLX."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from onepass_whisper.domain.audio import FRAME_SECONDS, SAMPLE_RATE, DecodedChunk, Window
from onepass_whisper.domain.model import Segment, TranscribeOptions, Word
from onepass_whisper.domain.windowing import SMOOTHING_FRAMES, sound_end, sound_frames

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
# Whisper may stop well before the window's end although speech goes on: end-of-text at a timestamp, the length
# limit, or a lone final timestamp, which says the speech ended (after a change of language, base closes the first
# language's last segment so and says nothing of the second). Sequential transcription seeks to the last timestamp
# and decodes from there (after a lone timestamp, to the window's end: what followed is lost). Here windows are
# decoded in parallel, so:
# 1. the decoder may not end a sequence with a segment opened while more than CONTINUE_SECONDS of sound follow the
#    opening in its window (``finish_until``): the segment is finished in the same pass;
# 2. where the audio holds more than CONTINUE_SECONDS of sound after the last timed word, whatever made the sequence
#    stop, the service decodes that rest again as a window of its own, in the next batch, its language detected
#    afresh (``may_have_undecoded_tail``, ``undecoded_tail``). The audio decides, not the model's ending: a lone
#    timestamp before silence or room noise leaves nothing to decode (a hallucination is not decoded again), one
#    before a sentence in another language leaves that sentence.
#
# A tail is decoded against the model's own word (it said the speech ended, or stopped): its first segment is held
# to openai-whisper's test for a hallucination after a pause (``is_hallucination``), and a tail that fails it keeps
# no words (base on music after a sentence: " Thank you.", its first word at probability 0.01, its last 5 s long).
#
# Re-decoding ends: a tail starts after its window's last timed word, and only after progress (the last segment
# ends after the window's start), so each is shorter than the window it was cut from; a tail that yields no words
# has none of its own; and a window's rest is cut at most MAX_TAIL_DEPTH times over (a model that says one word a
# window on a long noise costs that many windows, not one per word).

MAX_TAIL_DEPTH = 8  # heuristic: a 30-s window holds at most about six sentences with pauses between them
# heuristic: a tail starts this long before its first sound, where the pause after the last word is longer; a soft
# onset (a fricative) may lie under the sound threshold for a frame or two
ONSET_MARGIN_SECONDS = 0.2


def finish_until(window: Window) -> float:
    """Seconds into ``window`` before which a segment opened must be finished in the window: more than
    ``CONTINUE_SECONDS`` of sound follow it (none in silence, whatever the model says)."""
    return min(sound_end(window.samples), window.duration) - CONTINUE_SECONDS


def sound_after(window: Window, start: float) -> tuple[float, float]:
    """Seconds of sound in ``window`` from ``start`` (seconds into it) on, in its 20 ms frames that are sound by
    the windowing's rule with the window's own loudness (``sound_frames``), and where the first of them begins
    (the window's duration where there is none).

    A run of sound at ``start`` no longer than the smoothing's reach is the last word's own, spread by the
    smoothing (or a click): it is left out.
    """
    first = max(0, int(np.ceil(start / FRAME_SECONDS - 1e-9)))
    frames = sound_frames(window.samples)[first:]
    if frames.size and frames[0]:
        quiet = np.flatnonzero(~frames)
        halo = int(quiet[0]) if quiet.size else frames.size
        if halo <= SMOOTHING_FRAMES:
            frames, first = frames[halo:], first + halo
    sound = np.flatnonzero(frames)
    if not sound.size:
        return 0.0, window.duration
    return sound.size * FRAME_SECONDS, (first + int(sound[0])) * FRAME_SECONDS


def may_have_undecoded_tail(chunk: DecodedChunk) -> bool:
    """Whether ``chunk``'s window may hold speech its decoding left out: after progress (its last segment ends
    after the window's start), more than ``CONTINUE_SECONDS`` of sound follow that segment. Cheap, so that only
    such windows have their words timed at once; ``undecoded_tail`` then decides from the timed words.
    """
    if not chunk.segments or chunk.window.tail_depth >= MAX_TAIL_DEPTH:
        return False
    end = chunk.segments[-1].end
    return end > 0.0 and sound_after(chunk.window, end)[0] > CONTINUE_SECONDS


def undecoded_tail(chunk: DecodedChunk, segments: Sequence[Segment]) -> Window | None:
    """The rest of ``chunk``'s window after its last segment and its last timed word (``segments``, file times),
    from shortly before its first sound, as a window of its own, where more than ``CONTINUE_SECONDS`` of it is
    sound; else None. Windows here are decoded in parallel, so the rest is decoded as a new one."""
    window = chunk.window
    if not chunk.segments or window.tail_depth >= MAX_TAIL_DEPTH:
        return None
    ends = [word.end for segment in segments for word in segment.words]  # file times
    start = max([chunk.segments[-1].end, *(end - window.offset for end in ends)])
    sound, onset = sound_after(window, start)
    if start <= 0.0 or sound <= CONTINUE_SECONDS:
        return None
    cut = int(np.ceil(max(start, onset - ONSET_MARGIN_SECONDS) * SAMPLE_RATE))
    # on the sample grid, and not before a word already timed (which the float arithmetic could put a 1e-15 s later)
    offset = max([(window.first_sample + cut) / SAMPLE_RATE, *ends])
    return Window(
        source=window.source,
        index=window.index,
        offset=offset,
        samples=window.samples[cut:],
        tail_depth=window.tail_depth + 1,
    )


def timed_at_once(chunk: DecodedChunk) -> bool:
    """Whether ``chunk``'s words are timed before the next batch is decoded, not beside it: its window may have an
    undecoded tail (which starts after its last timed word), or is one (whose first segment is checked)."""
    return chunk.window.tail_depth > 0 or may_have_undecoded_tail(chunk)


def settle_tail(chunk: DecodedChunk, segments: Sequence[Segment]) -> tuple[list[Segment], Window | None]:
    """The timed ``segments`` of a chunk that ``timed_at_once`` chose, to keep, and its undecoded tail (or None):
    a tail window whose first segment is a hallucination keeps nothing and has no tail of its own."""
    if chunk.window.tail_depth > 0 and segments and is_hallucination(segments[0]):
        return [], None
    return list(segments), undecoded_tail(chunk, segments) if may_have_undecoded_tail(chunk) else None


# openai-whisper's hallucination test (``transcribe.py``, used with ``hallucination_silence_threshold``), less its
# term for short words: it assumes openai-whisper's word times, where a word under 133 ms is suspect; the refinement
# here moves word edges onto the audio's dips and leaves real short words (base's French tail on espeak-ng: " et"
# 20 ms, " du" 40 ms, 3.1 points from those two alone, and its words dropped)
_PUNCTUATION = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"
_ANOMALOUS_PROBABILITY = 0.15
_LONGEST_SECONDS = 2.0  # a word longer is suspect, the more the longer


def word_anomaly(word: Word) -> float:
    """openai-whisper's ``word_anomaly_score`` without its shortness term: 1 for an unlikely word, plus the seconds
    it lasts beyond 2."""
    score = 1.0 if word.probability < _ANOMALOUS_PROBABILITY else 0.0
    return score + max(0.0, word.end - word.start - _LONGEST_SECONDS)


def is_hallucination(segment: Segment) -> bool:
    """openai-whisper's ``is_segment_anomaly``: the anomaly of the first 8 words (punctuation aside) is at least 3,
    or about one a word. A segment without timed words is not judged."""
    words = [w for w in segment.words if w.text.strip() and not all(c in _PUNCTUATION for c in w.text.strip())][:8]
    if not words:
        return False
    score = sum(word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)
