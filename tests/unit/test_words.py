"""Words of the scripts without spaces: whisper's character pieces joined into ICU's words (``domain/words.py``,
``adapters/word_breaks.py``), and subtitle lines that never break inside one."""

from __future__ import annotations

import pytest

from onepass_whisper.adapters.word_breaks import group_words, word_boundaries
from onepass_whisper.adapters.writers import SubtitleLayout, render
from onepass_whisper.domain.model import Segment, Transcript, Word
from onepass_whisper.domain.words import join_pieces

icu = pytest.importorskip("icu4py.breakers", reason="the 'words' extra (icu4py) is not installed")


def test_pieces_join_between_boundaries_and_a_piece_is_never_cut() -> None:
    assert join_pieces(["北", "京", "大", "学"], [1, 1, 2, 1], {0, 2, 4}) == (["北京", "大学"], [2, 3])
    assert join_pieces(["ab", "c"], [1, 1], {0, 1, 3}) == (["abc"], [2])  # 1 falls inside "ab": ignored
    assert join_pieces([], [], {0}) == ([], [])
    with pytest.raises(ValueError, match="token counts"):
        join_pieces(["a"], [], {0})


@pytest.mark.parametrize(
    ("language", "text", "words"),
    [
        ("zh", "我们今天去北京大学参观。", ["我们", "今天", "去", "北京", "大学", "参观", "。"]),
        ("ja", "今日は天気がいいので", ["今日", "は", "天気", "が", "いい", "ので"]),
        ("th", "วันนี้อากาศดีมาก", ["วัน", "นี้", "อากาศ", "ดี", "มาก"]),
        ("lo", "ສະບາຍດີປະເທດລາວ", ["ສະບາຍດີ", "ປະເທດ", "ລາວ"]),
        ("my", "မင်္ဂလာပါမြန်မာနိုင်ငံ", ["မင်္ဂလာ", "ပါ", "မြန်မာနိုင်ငံ"]),
        ("yue", "我哋今日去香港大學", ["我", "哋", "今日", "去", "香港", "大學"]),
    ],
)
def test_characters_become_the_words_icu_finds(language: str, text: str, words: list[str]) -> None:
    """Whisper's pieces for these scripts are about a character each (as here); ICU's dictionaries join them."""
    assert group_words(list(text), [1] * len(text), language) == (words, [len(w) for w in words])


def test_languages_with_spaces_keep_whisper_s_words() -> None:
    assert word_boundaries(" hello world", "en") is None
    assert group_words([" hello", " wor", "ld"], [1, 1, 1], "en") == ([" hello", " wor", "ld"], [1, 1, 1])


def test_offsets_count_characters_beyond_the_basic_plane() -> None:
    """ICU counts UTF-16 units; a character outside the BMP (an emoji, a rare Han character) is one here."""
    assert group_words(["😀", "北", "京"], [2, 1, 1], "zh") == (["😀", "北京"], [2, 2])


def test_subtitle_lines_never_break_inside_a_grouped_word() -> None:
    """``--max-line-width`` cuts lines between words: with ICU's words, never inside 北京 or 大学."""
    text = "我们今天去北京大学参观然后在食堂吃午饭"
    words, _ = group_words(list(text), [1] * len(text), "zh")
    timed = [Word(w, i * 0.5, i * 0.5 + 0.5, 0.9) for i, w in enumerate(words)]
    transcript = Transcript([Segment(0.0, timed[-1].end, text, timed)], "zh", 10.0)
    for width in range(1, 9):
        srt = render(transcript, "srt", SubtitleLayout(max_line_width=width, max_line_count=2))
        lines = [line for line in srt.splitlines() if line and "-->" not in line and not line.isdigit()]
        assert "".join(lines) == text
        assert all(_is_words(line, words) for line in lines), (width, lines)


def _is_words(line: str, words: list[str]) -> bool:
    """Whether ``line`` is a run of whole ``words``."""
    if not line:
        return True
    return any(line.startswith(w) and _is_words(line[len(w) :], words) for w in words)
