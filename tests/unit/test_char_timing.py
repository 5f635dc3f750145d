"""``--char-timing`` on fakes: the option reaches the decoder, the aligner and the lag store; the aligner times word
starts from the character rows (``DecodedChunk.char_rows``), run after run; and the words are spelled one character
a token, whatever the characters (``adapters/mlx/char_forcing.py``'s builders, with a byte-level fake tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from onepass_whisper.adapters.dtw import DtwAligner, LagAligner
from onepass_whisper.adapters.dtw.aligner import char_token_frames
from onepass_whisper.adapters.dtw.lag_store import JsonHeadStore, JsonLagStore
from onepass_whisper.adapters.dtw.refine import CHAR_EDGE_SEARCH_SECONDS, EDGE_SEARCH_SECONDS
from onepass_whisper.domain.audio import CharacterRows, DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.api import Transcriber
from onepass_whisper.entrypoints.container import Container
from tests.fakes import FakeDecoder, FakeModelSource, InMemoryAudioSource, tone

# words of unequal length: timed by characters, the starts move (within the aligner's guard on a 2-s window)
TEXT = "one two three four five"


def chunk_of(decoder: FakeDecoder, seconds: float = 2.0) -> DecodedChunk:
    window = Window(source=0, index=0, offset=0.0, samples=tone(seconds).samples)
    (chunk,) = decoder.decode_batch([window], TranscribeOptions())
    return chunk


def starts(words: tuple[tuple[Any, ...], ...]) -> list[float]:
    return [w.start for ws in words for w in ws]


def test_the_option_reaches_the_decoder_the_aligner_and_the_lag_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: dict[str, object] = {}

    def load_decoder(folder: Path, name: str, **kwargs: object) -> FakeDecoder:
        built.update(kwargs)
        return FakeDecoder(name=name)

    monkeypatch.setattr("onepass_whisper.adapters.mlx.bootstrap", lambda fast_blas=True: None)
    monkeypatch.setattr("onepass_whisper.adapters.mlx.load_decoder", load_decoder)
    container = Container()
    container.config.cache_dir.from_value(tmp_path)
    with container.override_providers(model_source=FakeModelSource({"base": tmp_path})):
        transcriber = Transcriber("base", char_timing=True, container=container)
    assert built["char_timing"] is True
    heads = built["char_heads"]  # the choice of the character rows' heads, kept beside the lags in the same cache
    assert (
        isinstance(heads, JsonHeadStore) and heads.path.parent == JsonLagStore.for_model(tmp_path, "base").path.parent
    )
    assert transcriber.service.aligner == LagAligner(DtwAligner(edge_reach=CHAR_EDGE_SEARCH_SECONDS))
    store = transcriber.service.lag_store
    assert isinstance(store, JsonLagStore) and store.path.name.endswith("-chars.json")
    assert store.path != JsonLagStore.for_model(tmp_path, "base").path  # the word pieces' lag is kept apart

    plain = Container()
    assert plain.aligner() == LagAligner(DtwAligner(edge_reach=EDGE_SEARCH_SECONDS))


def test_the_aligner_takes_word_starts_from_the_character_rows() -> None:
    pieces = chunk_of(FakeDecoder(TEXT))
    chars = chunk_of(FakeDecoder(TEXT, char_timing=True))
    assert pieces.char_rows is None and chars.char_rows is not None
    aligner = DtwAligner(refine=False)
    by_pieces, by_chars = starts(aligner.align(pieces)), starts(aligner.align(chars))
    assert by_chars != by_pieces
    # the fake's character block diagonal: a word starts at its first character's block
    (run,) = chars.char_rows
    rows = run.attention.shape[1]
    frames = chars.window.num_frames
    expected = [f * frames // rows for f in run.firsts.tolist()]
    counts = [c for s in chars.segments for c in s.word_token_counts]
    np.testing.assert_array_equal(char_token_frames(chars)[:-1], np.repeat(expected, counts))
    raw = DtwAligner(refine=False)
    assert starts(raw.align(chars)) == pytest.approx([f * chars.frame_seconds for f in expected], abs=1e-9)


def test_the_lag_is_measured_on_the_character_rows() -> None:
    chars = chunk_of(FakeDecoder(TEXT, char_timing=True))
    measured, _ = LagAligner(DtwAligner()).measure(chars)
    assert measured.char_rows is None and measured.attention.size == 0
    assert measured.token_frames is not None
    np.testing.assert_array_equal(measured.token_frames, char_token_frames(chars))
    pieces_measured, _ = LagAligner(DtwAligner()).measure(evolve(chars, char_rows=None))
    assert pieces_measured.token_frames is not None
    assert not np.array_equal(measured.token_frames, pieces_measured.token_frames)


def test_a_window_spelled_in_two_runs_gives_each_its_stretch_of_frames() -> None:
    """The second run's DTW starts where the word pieces' DTW starts its first word: its rows cannot pull a word
    into the first run's stretch, whatever they say."""
    chunk = chunk_of(FakeDecoder(TEXT), seconds=10.0)
    frames = chunk.window.num_frames
    words = len(TEXT.split())
    pieces = char_token_frames(evolve(chunk, char_rows=(CharacterRows(0, np.arange(words), chunk.attention),)))
    split = 2
    flat = np.zeros((2, split + 1, frames), np.float32)  # rows that all look at frame 0: DTW alone would say 0
    flat[:, :, 0] = 5.0
    runs = (
        CharacterRows(0, np.arange(split), chunk.attention[:, : split + 1]),
        CharacterRows(split, np.arange(words - split), flat[:, : words - split + 1]),
    )
    timed = char_token_frames(evolve(chunk, char_rows=runs))
    assert timed[split] == pieces[split]  # the second run's first word: its stretch's first frame
    assert (timed[split:] >= pieces[split]).all()
    assert (timed[:split] <= pieces[split]).all()


def test_character_rows_that_miss_a_word_are_refused() -> None:
    chunk = chunk_of(FakeDecoder(TEXT, char_timing=True))
    (run,) = chunk.char_rows or ()
    with pytest.raises(ValueError, match="cover the chunk's 5 words"):
        char_token_frames(evolve(chunk, char_rows=(evolve(run, firsts=run.firsts[:-1]),)))


def test_the_service_times_char_rows_where_the_option_is_on() -> None:
    """End to end on fakes: the service with the real aligner gives other word starts with the character rows."""
    audio = InMemoryAudioSource({"a.wav": tone(2.0)})
    results = []
    for char_timing in (False, True):
        container = Container()
        container.config.refine.from_value(False)
        with container.override_providers(audio=audio, decoder=FakeDecoder(TEXT, char_timing=char_timing)):
            transcript = container.service().transcribe(Path("a.wav"), TranscribeOptions())
        results.append(transcript)
    assert [w.text for w in results[0].words] == [w.text for w in results[1].words]
    assert [w.start for w in results[0].words] != [w.start for w in results[1].words]


# -- the spelling ------------------------------------------------------------------------------------------------


def byte_tokens(text: str) -> list[int]:
    """A byte-level tokenizer's worst case: one token a UTF-8 byte (so 'é' is two tokens, '字' three)."""
    return list(text.encode())


SPACE = byte_tokens(" ")
words_strategy = st.lists(
    st.builds(
        lambda lead, body: lead + body,
        st.sampled_from(["", " ", "  "]),
        st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=12),
    ),
    min_size=1,
    max_size=30,
)


@given(words_strategy)
def test_each_word_is_spelled_a_character_at_a_time_a_space_between(words: list[str]) -> None:
    from onepass_whisper.adapters.mlx.spelling import char_tokens

    spelled = char_tokens(words, byte_tokens, SPACE)
    assert bytes(spelled.tokens).decode() == " ".join(w.strip() for w in words)
    for word, first in zip(words, spelled.firsts):
        head = word.strip()[0].encode()
        assert bytes(spelled.tokens[first : first + len(head)]) == head  # the first character's first token
        if first:
            assert spelled.tokens[first - 1 : first] == tuple(SPACE)


def test_french_words_keep_their_accents_and_punctuation_its_place() -> None:
    from onepass_whisper.adapters.mlx.spelling import char_tokens

    words = [" Ça", " été", ",", " l'œuvre", "."]
    spelled = char_tokens(words, byte_tokens, SPACE)
    assert bytes(spelled.tokens).decode() == "Ça été , l'œuvre ."
    assert spelled.firsts == (0, 4, 10, 12, 21)
    assert bytes(spelled.tokens[4:6]).decode() == "é"  # one character, two tokens


@given(words_strategy, st.integers(min_value=12, max_value=80))
def test_runs_fit_the_room_and_cover_every_word_in_order(words: list[str], room: int) -> None:
    from onepass_whisper.adapters.mlx.spelling import char_tokens, spelled_runs

    runs = spelled_runs(words, byte_tokens, SPACE, room)
    assert all(len(spelled.tokens) <= room for _, spelled in runs)
    assert [first for first, _ in runs] == sorted({first for first, _ in runs})
    assert sum(len(spelled.firsts) for _, spelled in runs) == len(words)
    whole = char_tokens(words, byte_tokens, SPACE)
    if len(whole.tokens) <= room:
        assert runs == [(0, whole)]
    for (first, spelled), following in zip(runs, [*[f for f, _ in runs[1:]], len(words)]):
        assert len(spelled.firsts) == following - first
        expected = char_tokens(words[first:following], byte_tokens, SPACE)
        if all(len(char_tokens([w], byte_tokens, SPACE).tokens) <= room for w in words[first:following]):
            assert spelled == expected


def test_a_character_start_far_from_its_word_pieces_start_gives_way_to_it() -> None:
    """Where the characters' DTW strays (tiny.en's over long windows), the word pieces' start stands, shifted by
    the window's median shift between the two."""
    chars = chunk_of(FakeDecoder(TEXT, char_timing=True))
    taken = char_token_frames(chars)  # one token a word in the fake: a word's start is its token's frame
    pieces = taken + 3  # the word pieces 3 frames later throughout: the median shift is -3
    pieces[4] += 20  # the last word's pieces far off (0.4 s, past the 0.3-s guard)
    guarded = char_token_frames(evolve(chars, token_frames=pieces.astype(np.int32)))
    np.testing.assert_array_equal(guarded[:4], taken[:4])
    assert guarded[4] == pieces[4] - 3
