"""ICU's word break for the scripts without spaces (``domain/words.py``), through the ``icu4py`` wheel.

ICU's word break finds Chinese and Japanese words with its CJK dictionary, Thai, Lao, Burmese and Khmer words with
theirs: the segmentation browsers use to select a word on double-click, so its words are ones readers accept. The
wheel bundles ICU (its data, ~30 MB of the ~42 installed): an optional dependency (the ``words`` extra), imported
here only. Without it whisper's pieces stay as they are (about a character a word).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from onepass_whisper.domain.words import SPACELESS_LANGUAGES, join_pieces

# whisper's codes as ICU's locales: ICU has no Cantonese dictionary of its own; its CJK dictionary covers the Han
# characters written for Cantonese
_LOCALES = {"zh": "zh", "ja": "ja", "th": "th", "lo": "lo", "my": "my", "yue": "zh_Hant"}


@functools.cache
def _breaker() -> Any:
    """icu4py's ``WordBreaker`` class, or None where the wheel is not installed."""
    try:
        from icu4py.breakers import WordBreaker
    except ImportError:
        return None
    return WordBreaker


def word_boundaries(text: str, language: str) -> set[int] | None:
    """The character offsets in ``text`` where ICU's word break for ``language`` puts a boundary; None where the
    language is written with spaces (whisper's words are right) or ICU is not installed."""
    breaker = _breaker() if language in SPACELESS_LANGUAGES else None
    if breaker is None or not text:
        return None
    boundaries, offset = {0}, 0
    for word in breaker(text, _LOCALES[language]):  # its words, not ``segments()``: those count UTF-16 units
        offset += len(word)
        boundaries.add(offset)
    return boundaries


def group_words(pieces: Sequence[str], token_counts: Sequence[int], language: str) -> tuple[list[str], list[int]]:
    """Whisper's word pieces of one segment and their token counts, joined into words where ``language`` is
    written without spaces (``domain.words.join_pieces``); as they are otherwise."""
    boundaries = word_boundaries("".join(pieces), language) if language in SPACELESS_LANGUAGES else None
    if boundaries is None:
        return list(pieces), list(token_counts)
    return join_pieces(pieces, token_counts, boundaries)
