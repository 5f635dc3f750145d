"""Words of the scripts written without spaces: whisper's pieces joined into the words a reader sees.

Whisper splits the tokens of Chinese, Japanese, Thai, Lao, Burmese and Cantonese text wherever they decode to whole
characters (``split_tokens_on_unicode``): about a character a "word", so word times and subtitle lines cut through
words (北京 split into 北 and 京). A word breaker of the language (ICU's dictionary-based word break, in
``adapters/word_breaks.py``) says where the words of the text begin and end; the pieces between two such boundaries
are joined here, their tokens counted together, so the aligner times whole words and the writers break lines only
between them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

# whisper's languages whose tokenizer splits words on unicode characters, not spaces (``Tokenizer.split_to_word_tokens``)
SPACELESS_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


def join_pieces(
    pieces: Sequence[str], token_counts: Sequence[int], boundaries: Collection[int]
) -> tuple[list[str], list[int]]:
    """``pieces`` (consecutive parts of one text) joined between the character offsets in ``boundaries`` where a
    word begins or ends, with their token counts summed.

    A piece is never cut: a boundary inside one (a token that spans two words) is ignored, and the piece stays
    with the word it starts in. The end of the text always closes the last word.
    """
    if len(pieces) != len(token_counts):
        raise ValueError(f"{len(pieces)} pieces but {len(token_counts)} token counts")  # a bug, not user error
    words: list[str] = []
    counts: list[int] = []
    text, tokens, offset = "", 0, 0
    for piece, count in zip(pieces, token_counts):
        text, tokens, offset = text + piece, tokens + count, offset + len(piece)
        if offset in boundaries:
            words.append(text)
            counts.append(tokens)
            text, tokens = "", 0
    if text or tokens:
        words.append(text)
        counts.append(tokens)
    return words, counts
