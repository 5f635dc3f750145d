"""Which decoded windows heard no speech: openai-whisper's rule, with the log probability taken over the words.

openai-whisper skips a window when its no-speech probability is above ``no_speech_threshold`` and its average log
probability is below ``logprob_threshold``. That average runs over every sampled token: on silence the model writes
``<|0.00|> you<|2.00|><|endoftext|>``, where the timestamps and the end are near-certain and the one word is not
(tiny.en: the word at probability 0.17, the average -0.70), so the near-certain tokens outvote the word and the
hallucination is kept. The question the rule asks is whether the model is sure of the *words* it heard where it
says nobody speaks; so here the same two thresholds also judge the mean log probability of the text tokens alone.
A window is silent when the model says no speech (no-speech probability above the threshold) and either average is
below the log-probability threshold: real speech that the model transcribes confidently is kept whatever its
no-speech probability, and no constant is added to the user's two thresholds (``docs/reliability.md`` has the
measurements).
"""

from __future__ import annotations

import numpy as np
from attrs import evolve

from onepass_whisper.domain.audio import DecodedChunk
from onepass_whisper.domain.model import TranscribeOptions


def words_logprob(chunk: DecodedChunk) -> float:
    """The mean log probability of ``chunk``'s text tokens (no timestamps, no end-of-text); -inf with none."""
    probabilities = np.asarray(chunk.token_probabilities, np.float64)
    if probabilities.size == 0:
        return -np.inf
    return float(np.mean(np.log(np.maximum(probabilities, np.finfo(np.float64).tiny))))


def heard_no_speech(chunk: DecodedChunk, options: TranscribeOptions) -> bool:
    """Whether ``chunk``'s window is silent by the rule above (never with either threshold off)."""
    if options.no_speech_threshold is None or options.logprob_threshold is None:
        return False
    if not chunk.no_speech_prob > options.no_speech_threshold:  # NaN (a model without the token): not silent
        return False
    return min(chunk.avg_logprob, words_logprob(chunk)) < options.logprob_threshold


def without_speech(chunk: DecodedChunk) -> DecodedChunk:
    """``chunk`` with no segments: its text tokens and their attention rows go, the end-of-text row stays."""
    attention = chunk.attention[:, -1:] if chunk.attention.ndim == 3 else chunk.attention
    frames = None if chunk.token_frames is None else chunk.token_frames[-1:].copy()
    return evolve(
        chunk,
        segments=(),
        token_probabilities=chunk.token_probabilities[:0],
        attention=np.ascontiguousarray(attention),
        speech_ended=True,
        token_frames=frames,
        char_rows=None,
    )


def speech_only(chunk: DecodedChunk, options: TranscribeOptions) -> DecodedChunk:
    """``chunk`` as decoded, or without its words where its window heard no speech: the one place both the
    transcription service and the server's scheduler apply the rule, so that both give the same words."""
    return without_speech(chunk) if chunk.segments and heard_no_speech(chunk, options) else chunk
