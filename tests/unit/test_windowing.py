"""split_into_windows: the windows tile the input, and cuts land in pauses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE, Window
from onepass_whisper.domain.windowing import sound_end, split_into_windows, stream_windows

Span = tuple[int, int]  # [start, end) in samples


def seconds(n: float) -> int:
    return round(n * SAMPLE_RATE)


def cuts(windows: list[Window]) -> list[int]:
    """The sample positions where one window ends and the next begins."""
    return [seconds(w.offset) for w in windows[1:]]


def speech_like(
    seed: int, total_seconds: float, pause: tuple[float, float] = (0.25, 0.9), level: tuple[float, float] = (0.1, 0.5)
) -> tuple[NDArray[np.float32], list[Span]]:
    """Noise bursts ("words", 200-600 ms) between pauses of quiet room noise (-60 dB); returns the bursts' spans."""
    rng = np.random.default_rng(seed)
    parts: list[NDArray[np.float64]] = []
    words: list[Span] = []
    position = 0
    while position < seconds(total_seconds):
        gap = seconds(rng.uniform(*pause))
        parts.append(1e-3 * rng.standard_normal(gap))
        position += gap
        word = seconds(rng.uniform(0.2, 0.6))
        parts.append(rng.uniform(*level) * rng.standard_normal(word))
        words.append((position, position + word))
        position += word
    return np.concatenate(parts).astype(np.float32), words


@st.composite
def cases(draw: st.DrawFn) -> tuple[NDArray[np.float32], float]:
    """(samples, max_seconds): a few raw samples under limits down to one sample, or up to 12 s of stretches of
    digital silence, faint or loud noise, tones and clicks under limits from 50 ms."""
    if draw(st.booleans()):
        raw = draw(arrays(np.float32, st.integers(0, 64), elements=st.floats(-2, 2, width=32)))
        return raw, draw(st.floats(1 / SAMPLE_RATE, 0.01))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = st.sampled_from(["zeros", "noise", "tone", "click"])
    stretches = draw(st.lists(st.tuples(kinds, st.floats(0, 3), st.floats(1e-5, 1.5)), max_size=8))
    parts = [np.zeros(0)]
    for kind, duration, level in stretches:
        n = seconds(duration)
        if kind == "noise":
            parts.append(level * rng.standard_normal(n))
        elif kind == "tone":
            parts.append(level * np.sin(2 * np.pi * 220 * np.arange(n) / SAMPLE_RATE))
        elif kind == "click":
            parts.append(np.where(rng.random(n) < 0.001, level, 0.0))
        else:
            parts.append(np.zeros(n))
    return np.concatenate(parts).astype(np.float32), draw(st.one_of(st.floats(0.05, 4.0), st.just(30.0)))


@given(case=cases(), source=st.integers(0, 1000))
def test_windows_tile_the_input_in_order(case: tuple[NDArray[np.float32], float], source: int) -> None:
    samples, max_seconds = case

    windows = split_into_windows(samples, source, max_seconds)

    joined = np.concatenate([w.samples for w in windows]) if windows else np.zeros(0, np.float32)
    np.testing.assert_array_equal(joined, samples)
    starts = np.cumsum([0] + [len(w.samples) for w in windows])[:-1]
    assert [w.offset for w in windows] == [start / SAMPLE_RATE for start in starts]
    assert [w.index for w in windows] == list(range(len(windows)))
    assert all(w.source == source for w in windows)
    assert all(0 < w.duration <= max_seconds for w in windows)


@given(case=cases())
def test_only_the_last_window_is_shorter_than_half_the_limit(case: tuple[NDArray[np.float32], float]) -> None:
    samples, max_seconds = case
    limit = int(max_seconds * SAMPLE_RATE)  # samples, give or take one of float rounding

    windows = split_into_windows(samples, 0, max_seconds)

    if len(samples) < limit:
        assert len(windows) == (1 if len(samples) else 0)
    assert all(len(w.samples) >= (limit - 1) // 2 for w in windows[:-1])


@pytest.mark.parametrize("seed", range(6))
def test_no_cut_falls_inside_a_word(seed: int) -> None:
    samples, words = speech_like(seed, total_seconds=150)

    windows = split_into_windows(samples, source=0)

    assert len(windows) >= 5
    assert all(w.duration <= 30.0 for w in windows)
    assert not [(cut, word) for cut in cuts(windows) for word in words if word[0] < cut < word[1]]


def test_level_is_judged_against_the_windows_own_loudness() -> None:
    """Speech 40 dB quieter, with pauses of room noise 40 dB under it, is cut in pauses too."""
    samples, words = speech_like(seed=11, total_seconds=95)
    quiet = samples * np.float32(0.01)

    assert not [(cut, word) for cut in cuts(split_into_windows(quiet, 0)) for word in words if word[0] < cut < word[1]]


def test_windows_end_in_the_middle_of_a_pause() -> None:
    """A 1-s pause from 24 s to 25 s in otherwise continuous noise: the cut is at 24.5 s."""
    rng = np.random.default_rng(0)
    samples = (0.2 * rng.standard_normal(seconds(40))).astype(np.float32)
    samples[seconds(24) : seconds(25)] = 0.0

    assert cuts(split_into_windows(samples, 0)) == [seconds(24.5)]


def test_the_latest_pause_is_preferred() -> None:
    rng = np.random.default_rng(1)
    samples = (0.2 * rng.standard_normal(seconds(40))).astype(np.float32)
    for pause_start in (16, 20, 27):
        samples[seconds(pause_start) : seconds(pause_start + 0.5)] = 0.0

    assert cuts(split_into_windows(samples, 0)) == [seconds(27.25)]


def test_a_pause_before_half_the_limit_is_not_used() -> None:
    rng = np.random.default_rng(2)
    samples = (0.2 * rng.standard_normal(seconds(40))).astype(np.float32)
    samples[seconds(10) : seconds(11)] = 0.0

    assert cuts(split_into_windows(samples, 0)) == [seconds(30)]


def test_a_clear_dip_is_used_when_nothing_is_quiet() -> None:
    """Noisy recording: the pause at 22 s is only 15 dB under the speech; it is still where the cut goes."""
    rng = np.random.default_rng(3)
    samples = (0.2 * rng.standard_normal(seconds(40))).astype(np.float32)
    samples[seconds(22) : seconds(23)] *= np.float32(10 ** (-15 / 20))

    cut = cuts(split_into_windows(samples, 0))
    assert len(cut) == 1
    assert seconds(22) < cut[0] < seconds(23)


def test_continuous_noise_is_cut_blindly_every_30_seconds() -> None:
    rng = np.random.default_rng(4)
    samples = (0.1 * rng.standard_normal(seconds(95))).astype(np.float32)

    windows = split_into_windows(samples, 3)

    assert [w.offset for w in windows] == [0.0, 30.0, 60.0, 90.0]
    assert [len(w.samples) for w in windows] == [seconds(30)] * 3 + [seconds(5)]
    assert [w.source for w in windows] == [3] * 4


def test_a_steady_tone_is_cut_blindly_too() -> None:
    t = np.arange(seconds(61)) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    assert cuts(split_into_windows(samples, 0)) == [seconds(30), seconds(60)]


def test_digital_silence_is_cut_within_the_limit() -> None:
    windows = split_into_windows(np.zeros(seconds(70), np.float32), 0)

    assert len(windows) == 3
    assert all(15.0 <= w.duration <= 30.0 for w in windows[:-1])


def test_empty_input_has_no_windows() -> None:
    assert split_into_windows(np.zeros(0, np.float32), 0) == []


@pytest.mark.parametrize("length", [1, 319, 320, 321, seconds(1), seconds(30)])
def test_input_within_the_limit_is_one_window(length: int) -> None:
    samples = np.random.default_rng(5).standard_normal(length).astype(np.float32)

    windows = split_into_windows(samples, 2)

    assert len(windows) == 1
    assert (windows[0].offset, windows[0].index, windows[0].source) == (0.0, 0, 2)
    np.testing.assert_array_equal(windows[0].samples, samples)


def test_one_sample_over_the_limit_makes_two_windows() -> None:
    samples = np.random.default_rng(6).standard_normal(seconds(30) + 1).astype(np.float32)

    assert [len(w.samples) for w in split_into_windows(samples, 0)] == [seconds(30), 1]


def test_windows_are_views_of_the_input() -> None:
    samples = np.zeros(seconds(45), np.float32)

    assert all(np.shares_memory(w.samples, samples) for w in split_into_windows(samples, 0))


@pytest.mark.parametrize("bad", [0.0, -1.0, 0.5 / SAMPLE_RATE, float("nan"), float("inf")])
def test_max_seconds_must_allow_a_sample(bad: float) -> None:
    with pytest.raises(ValueError):
        split_into_windows(np.zeros(10, np.float32), 0, bad)


def test_samples_must_be_mono() -> None:
    with pytest.raises(ValueError):
        split_into_windows(np.zeros((10, 2), np.float32), 0)


@given(
    data=st.data(),
    seconds=st.floats(0.0, 150.0),
    pauses=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.05, 1.0)), max_size=12),
)
def test_streamed_windows_equal_the_whole_inputs(
    data: st.DataObject, seconds: float, pauses: list[tuple[float, float]]
) -> None:
    # the 2-hour-file path: blocks of any sizes give the very windows that the whole input gives
    n = round(seconds * SAMPLE_RATE)
    samples = (0.1 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    for where, length in pauses:
        start = round(where * n)
        samples[start : start + round(length * SAMPLE_RATE)] *= 1e-4
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=20)))
    blocks = np.split(samples, cuts)
    whole = split_into_windows(samples, source=3)
    streamed = list(stream_windows(iter(blocks), source=3))
    assert [(w.index, w.offset, w.samples.tobytes()) for w in streamed] == [
        (w.index, w.offset, w.samples.tobytes()) for w in whole
    ]


@pytest.mark.parametrize("seed", range(3))
def test_sound_ends_with_the_last_word_not_the_room_noise_after_it(seed: int) -> None:
    samples, words = speech_like(seed=seed, total_seconds=20)
    samples = np.concatenate([samples, (1e-3 * np.random.default_rng(seed).standard_normal(seconds(5)))])
    last_word_end = words[-1][1] / SAMPLE_RATE

    # within the smoothing's reach (110 ms) and a frame after the last word, never before it
    assert last_word_end <= sound_end(samples.astype(np.float32)) <= last_word_end + 0.14


def test_silence_and_dither_have_no_sound() -> None:
    dither = np.random.default_rng(0).standard_normal(seconds(10)).astype(np.float32) * np.float32(1 / 32768)

    assert sound_end(np.zeros(seconds(10), np.float32)) == 0.0
    assert sound_end(dither) == 0.0
    assert sound_end(np.zeros(0, np.float32)) == 0.0


def test_sound_to_the_very_end_ends_at_the_end() -> None:
    samples = (0.1 * np.random.default_rng(0).standard_normal(seconds(3) + 7)).astype(np.float32)

    assert sound_end(samples) == len(samples) / SAMPLE_RATE
