"""The heads that time the characters (``--char-timing``), chosen per model from the run's own windows
(``adapters/dtw/char_heads.py``): the shapes that rank the heads, and the energy valleys that pick a candidate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from attrs import evolve

from onepass_whisper.adapters.dtw.char_heads import CHOICE_BOUNDARIES, SHAPE_HEADS, CharHeadChoice, shape_scores
from onepass_whisper.adapters.dtw.lag_store import JsonHeadStore, JsonLagStore
from onepass_whisper.domain.audio import CharacterRows, DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from tests.fakes import FakeDecoder

SAMPLE_RATE = 16000
FRAME = 0.02  # seconds an attention frame
WORDS = 10


def diagonal(rows: int, frames: int) -> np.ndarray:
    """A sharp, monotone map: row ``i`` at its own frames (three: the median filter of 3 keeps them)."""
    qk = np.full((rows, frames), -5.0, np.float32)
    for row in range(rows):
        at = row * (frames - 3) // rows
        qk[row, at : at + 3] = 5.0
    return qk


def test_a_sharp_monotone_map_outranks_one_stuck_on_a_frame_and_a_flat_one() -> None:
    rows, frames = 40, 200
    stuck = np.full((rows, frames), -5.0, np.float32)
    stuck[:, 3:6] = 5.0
    flat = np.random.default_rng(0).normal(0.0, 0.1, (rows, frames)).astype(np.float32)
    sharp, stuck_score, flat_score = shape_scores(np.stack([diagonal(rows, frames), stuck, flat]))
    assert sharp > stuck_score > flat_score


def test_the_shape_heads_are_those_sharp_in_most_runs() -> None:
    pool = [(layer, head) for layer in range(3) for head in range(4)]
    sharp = [(2, 1), (0, 3), (1, 0)]
    rng = np.random.default_rng(1)
    samples = []
    for rows, frames in ((30, 150), (50, 400), (20, 90)):
        sample = rng.normal(0.0, 0.5, (len(pool), rows, frames)).astype(np.float32)
        for head in sharp:
            sample[pool.index(head)] = diagonal(rows, frames)
        samples.append(sample)
    choice = CharHeadChoice([(2, 0), (2, 1)], pool)
    choice.rank_shapes(samples)
    assert choice.shape_heads is not None and sorted(choice.shape_heads) == sorted(sharp)
    assert len(choice.shape_heads) == SHAPE_HEADS
    assert choice.capture == [(2, 0), (2, 1), *[h for h in choice.shape_heads if h != (2, 1)]]


ALIGNMENT = [(3, 0), (3, 1)]
SHAPES = [(1, 2), (2, 4), (0, 5)]


def spoken_window(rng: np.random.Generator) -> tuple[Window, np.ndarray]:
    """A 4-s 'speech' window (a tone) whose words start at irregular times, each in a 60-ms dip of its energy, as
    words meeting in connected speech do; and those starts."""
    starts = 0.2 + np.cumsum(rng.uniform(0.28, 0.4, WORDS)) - 0.28
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    envelope = np.ones_like(t)
    for start in starts:
        envelope[np.abs(t - start) < 0.03] = 0.001
    return Window(0, 0, 0.0, (0.3 * envelope * np.sin(2 * np.pi * 220 * t)).astype(np.float32)), starts


def char_map(starts: np.ndarray, frames: int, rows_a_word: int, jitter: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Rows (characters, a space between words, a last row) in blocks, each word's first character's block at its
    start plus ``jitter`` (seconds): what DTW over these rows gives back."""
    at = [round((s + j) / FRAME) for s, j in zip(starts, jitter)]
    bounds: list[int] = []  # each row's first frame
    firsts = []
    for k in range(len(starts)):
        if k:
            bounds.append(at[k] - 1)  # the space before the word
        firsts.append(len(bounds))
        following = at[k + 1] if k + 1 < len(starts) else frames - 2
        bounds += list(np.linspace(at[k], following - 1, rows_a_word, endpoint=False).round().astype(int))
    bounds.append(frames - 1)
    qk = np.full((len(bounds), frames), -5.0, np.float32)
    for row, (lo, hi) in enumerate(zip(bounds, [*bounds[1:], frames])):
        qk[row, lo : max(lo + 1, hi)] = 5.0
    return qk, firsts


def chunks_for(choice: CharHeadChoice, windows: int, shape_heads_follow: bool, seed: int = 0) -> list[DecodedChunk]:
    """Chunks whose character rows over ``choice.capture`` follow the words' starts in one candidate's heads and
    stray by up to 60 ms in the other's."""
    rng = np.random.default_rng(seed)
    decoder = FakeDecoder(" ".join(f"w{k}" for k in range(WORDS)))
    made = []
    for _ in range(windows):
        window, starts = spoken_window(rng)
        (chunk,) = decoder.decode_batch([window], TranscribeOptions())
        frames = window.num_frames
        good, firsts = char_map(starts, frames, 3, np.zeros(WORDS))
        bad, _ = char_map(starts, frames, 3, np.r_[0.0, rng.uniform(-0.06, 0.06, WORDS - 1)])
        following = set(SHAPES if shape_heads_follow else ALIGNMENT)
        rows = np.stack([good if h in following else bad for h in choice.capture])
        made.append(evolve(chunk, char_rows=(CharacterRows(0, np.array(firsts), rows),)))
    return made


POOL = [(layer, head) for layer in range(4) for head in range(6)]


def new_choice(store: JsonHeadStore | None = None) -> CharHeadChoice:
    choice = CharHeadChoice(ALIGNMENT, POOL, store)
    if choice.chosen is None:
        choice.shape_heads = list(SHAPES)
    return choice


def test_the_candidate_whose_starts_sit_on_the_energy_dips_is_chosen() -> None:
    windows = -(-CHOICE_BOUNDARIES // (WORDS - 1))  # enough interior starts in one batch
    for shape_heads_follow, expected in ((True, SHAPES), (False, ALIGNMENT)):
        choice = new_choice()
        timed = choice.weigh(chunks_for(choice, windows, shape_heads_follow))
        assert choice.chosen == expected
        assert choice.capture == expected  # later batches keep only those heads' rows
        assert all(c.char_rows is not None and c.char_rows[0].attention.shape[0] == len(expected) for c in timed)


def test_until_the_evidence_suffices_the_alignment_heads_time_the_characters() -> None:
    choice = new_choice()
    few = chunks_for(choice, 2, shape_heads_follow=True)
    timed = choice.weigh(few)
    assert choice.chosen is None
    for before, after in zip(few, timed):
        assert before.char_rows is not None and after.char_rows is not None
        np.testing.assert_array_equal(after.char_rows[0].attention, before.char_rows[0].attention[:2])
    choice.weigh(chunks_for(choice, -(-CHOICE_BOUNDARIES // (WORDS - 1)), shape_heads_follow=True, seed=1))
    assert choice.chosen == SHAPES  # the evidence of both batches


def test_the_choice_is_kept_for_the_models_later_runs_and_its_stale_lag_dropped(tmp_path: Path) -> None:
    """A short run cannot make the choice, and the character rows' kept lag belongs to the heads it was measured
    on: the first choice is kept, later runs take it without weighing, and the lag measured before it goes."""
    store = JsonHeadStore.for_model(tmp_path, "base")
    lags = JsonLagStore.for_model(tmp_path, "base", "chars")
    lags.save(0.38, 1255)  # measured on the alignment heads' rows, before any choice
    first = new_choice(store)
    first.weigh(chunks_for(first, -(-CHOICE_BOUNDARIES // (WORDS - 1)), shape_heads_follow=True))
    assert first.chosen == SHAPES and store.load() == SHAPES
    assert lags.load() is None
    later = new_choice(JsonHeadStore.for_model(tmp_path, "base"))
    assert later.chosen == SHAPES and later.capture == SHAPES
    few = chunks_for(later, 2, shape_heads_follow=False)  # evidence against them changes nothing
    assert [c.char_rows for c in later.weigh(few)] == [c.char_rows for c in few]
    assert later.chosen == SHAPES
    other = CharHeadChoice(ALIGNMENT, [(0, 0), (0, 1)], JsonHeadStore.for_model(tmp_path, "base"))
    assert other.chosen is None  # heads the model does not have (another model under the name): chosen afresh


def test_an_unreadable_choice_counts_as_none(tmp_path: Path) -> None:
    store = JsonHeadStore.for_model(tmp_path, "tiny.en")
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json", encoding="utf-8")
    assert store.load() is None
    assert CharHeadChoice(ALIGNMENT, POOL, store).chosen is None
