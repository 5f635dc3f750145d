"""How decoded words become the dictionary words pocketsphinx aligns, and rough pronunciations of the rest."""

from __future__ import annotations

import pytest

from onepass_whisper.adapters.phonetic import dictionary_words, pronounce

CMU_PHONES = set(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (" Hello,", ["hello"]),
        (" well-known", ["well", "known"]),
        (" U.S.", ["u", "s"]),
        (" don’t", ["don't"]),
        (" 'quoted'", ["quoted"]),
        (" 1990", ["one", "nine", "nine", "zero"]),
        (" $5", ["five"]),
        (" —", []),
    ],
)
def test_decoded_words_become_dictionary_words(text: str, words: list[str]) -> None:
    assert dictionary_words(text) == words


@pytest.mark.parametrize(
    ("word", "phones"),
    [
        ("gutenberg", "G AH T EH N B EH R G"),
        ("shillings", "SH IH L IH NG S"),
        ("bree", "B R IY"),
        ("llama", "L AE M AE"),
        ("cake", "K AE K"),
        ("x", "K S"),
    ],
)
def test_words_missing_from_the_dictionary_get_a_pronunciation_by_rule(word: str, phones: str) -> None:
    assert pronounce(word) == phones


@pytest.mark.parametrize("word", ["gutenberg", "mlx", "aeiou", "zzz", "q", "'"])
def test_every_rule_pronunciation_uses_cmu_phones_only(word: str) -> None:
    phones = pronounce(word).split()
    assert phones and set(phones) <= CMU_PHONES
