"""Whisper's English text normaliser (the ``whisper-normalizer`` package) and jiwer's word alignment."""

from __future__ import annotations

from collections.abc import Sequence

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer


class WhisperTextMetrics:
    """Normalises as openai-whisper's ``EnglishTextNormalizer`` and counts word errors with jiwer."""

    def __init__(self) -> None:
        self._normalizer = EnglishTextNormalizer()
        self._cache: dict[str, str] = {}  # words repeat a lot; the normaliser is ~60 regexes per call

    def normalize(self, text: str) -> str:
        try:
            return self._cache[text]
        except KeyError:
            normalized = " ".join(str(self._normalizer(text)).split())
            self._cache[text] = normalized
            return normalized

    def word_errors(self, reference: Sequence[str], hypothesis: Sequence[str]) -> int:
        if not reference or not hypothesis:  # jiwer refuses empty inputs; all words are then deletions or insertions
            return len(reference) + len(hypothesis)
        output = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
        return int(output.substitutions + output.deletions + output.insertions)
