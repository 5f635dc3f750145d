"""A window's sampled tokens as segments: cut at timestamp pairs, as openai-whisper's ``transcribe``."""

from __future__ import annotations

from collections.abc import Sequence

from mlx_whisper.tokenizer import Tokenizer

from onepass_whisper.adapters.word_breaks import group_words
from onepass_whisper.domain.audio import FRAME_SECONDS, ChunkSegment


def single_timestamp_ending(tokens: Sequence[int], timestamp_begin: int) -> bool:
    """Whether the sampled tokens end with one timestamp after text: the last segment closed, nothing follows."""
    return len(tokens) >= 2 and tokens[-1] >= timestamp_begin and tokens[-2] < timestamp_begin


def split_segments(tokens: Sequence[int], tokenizer: Tokenizer, duration: float) -> tuple[ChunkSegment, ...]:
    """Cut one window's sampled tokens into segments at timestamp pairs, as openai-whisper's ``transcribe``.

    Text after the last timestamp pair is kept as a last segment ending at the window's end: windows are cut at
    pauses and decoded in parallel, so there is no next window that would decode it again. Words of the scripts
    without spaces are whole words, not whisper's single characters (``adapters/word_breaks.py``).
    """
    begin = tokenizer.timestamp_begin
    segments: list[ChunkSegment] = []
    start: float | None = None
    text_tokens: list[int] = []

    def close(end: float) -> None:
        nonlocal text_tokens
        if text_tokens:
            pieces, piece_tokens = tokenizer.split_to_word_tokens(text_tokens)
            words, counts = group_words(
                [str(p) for p in pieces], [len(t) for t in piece_tokens], str(tokenizer.language or "")
            )
            seg_start = min(start if start is not None else 0.0, duration)
            segments.append(
                ChunkSegment(
                    start=seg_start,
                    end=max(seg_start, min(end, duration)),
                    text=str(tokenizer.decode(text_tokens)),
                    words=tuple(words),
                    word_token_counts=tuple(counts),
                )
            )
        text_tokens = []

    for token in tokens:
        if token >= begin:
            time = (token - begin) * FRAME_SECONDS
            if text_tokens:
                close(time)
                start = None
            else:
                start = time if start is None or time > start else start
        elif token < tokenizer.eot:
            text_tokens.append(token)
    if text_tokens:
        close(duration)
    return tuple(segments)
