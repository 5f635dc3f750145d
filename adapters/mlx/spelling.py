"""The words of a window spelled for the character-forcing pass (``char_forcing.py``): one character a token, a
space token between words. Plain Python over a tokenizer's ``encode``, so that it is tested without MLX."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from attrs import frozen


@frozen
class CharTokens:
    """A window's words spelled for the forced pass."""

    tokens: tuple[int, ...]  # the characters' tokens, a space token between words
    firsts: tuple[int, ...]  # per word, the index in ``tokens`` of its first character's first token


def char_tokens(words: Sequence[str], encode: Callable[[str], list[int]], space: Sequence[int]) -> CharTokens:
    """``words`` (as the tokenizer spells them: a leading space where one precedes) one character a token.

    A word's surrounding spaces are dropped (the space token stands for them); a word that is only spaces keeps
    them, and an empty word gets no token (its first index is the next token's: the following space's, or the row
    after the last character's, which predicts end-of-text)."""
    return _joined([_spelled(word, encode) for word in words], space)


def _spelled(word: str, encode: Callable[[str], list[int]]) -> tuple[int, ...]:
    """One word's characters' tokens, its surrounding spaces dropped (unless it is only spaces)."""
    return tuple(token for character in word.strip() or word for token in encode(character))


def spelled_runs(
    words: Sequence[str], encode: Callable[[str], list[int]], space: Sequence[int], room: int
) -> list[tuple[int, CharTokens]]:
    """``words`` spelled (``char_tokens``) in as few runs of at most ``room`` tokens as fit, of about equal length:
    each run's first word's index and its spelling. A word longer than ``room`` alone is cut to fit."""
    spelled = [_spelled(word, encode)[:room] for word in words]
    total = sum(len(t) for t in spelled) + len(space) * max(0, len(words) - 1)
    if total <= room:
        return [(0, _joined(spelled, space))] if words else []
    target = -(-total // -(-total // room))  # the length of each of the fewest runs, balanced
    runs: list[tuple[int, CharTokens]] = []
    start, length = 0, 0
    for i, tokens in enumerate(spelled):
        if i > start and length + len(space) + len(tokens) > target:
            runs.append((start, _joined(spelled[start:i], space)))
            start, length = i, 0
        length += (len(space) if i > start else 0) + len(tokens)
    runs.append((start, _joined(spelled[start:], space)))
    return runs


def _joined(spelled: Sequence[tuple[int, ...]], space: Sequence[int]) -> CharTokens:
    tokens: list[int] = []
    firsts: list[int] = []
    for i, word in enumerate(spelled):
        if i > 0:
            tokens += space
        firsts.append(len(tokens))
        tokens += word
    return CharTokens(tuple(tokens), tuple(firsts))
