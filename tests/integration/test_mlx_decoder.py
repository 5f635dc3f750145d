"""The batched MLX decoder: batch-size invariance, early exit, timestamp rules and segments, on real weights."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
from mlx_whisper.tokenizer import get_tokenizer

from onepass_whisper.adapters.audio_file import FileAudioSource
from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
from onepass_whisper.adapters.mlx.encoder import window_mel
from onepass_whisper.adapters.mlx.rules import LogitRules, TimestampState
from onepass_whisper.adapters.mlx.segments import split_segments
from onepass_whisper.domain.audio import Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import Decoder
from onepass_whisper.domain.windowing import split_into_windows

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"


@pytest.fixture(scope="module")
def windows() -> list[Window]:
    samples = FileAudioSource().load(SAMPLE).samples
    windows = split_into_windows(samples, source=0, max_seconds=4.0)  # cut in the pauses between sentences
    assert len(windows) >= 3
    first = windows[0]
    half = Window(0, len(windows), 0.0, first.samples[: len(first.samples) // 2])  # ends mid-sentence: fewer tokens
    return [*windows, half]


def test_one_batch_equals_batches_of_one(tiny_en: Decoder, windows: list[Window]) -> None:
    options = TranscribeOptions(temperatures=(0.0,))
    together = tiny_en.decode_batch(windows, options)
    alone = [tiny_en.decode_batch([w], options)[0] for w in windows]
    aligner = DtwAligner()
    assert len({len(c.token_probabilities) for c in together}) > 1  # sequences ended at different steps
    for a, b in zip(together, alone):
        assert [s.text for s in a.segments] == [s.text for s in b.segments]
        assert a.attention.shape == b.attention.shape
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-3)
        words_a = [w for seg in aligner.align(a) for w in seg]
        words_b = [w for seg in aligner.align(b) for w in seg]
        assert [w.text for w in words_a] == [w.text for w in words_b]
        np.testing.assert_allclose([w.start for w in words_a], [w.start for w in words_b], atol=1e-6)
        np.testing.assert_allclose([w.end for w in words_a], [w.end for w in words_b], atol=1e-6)


def test_attention_is_cropped_to_each_windows_real_frames(tiny_en: Decoder, windows: list[Window]) -> None:
    chunks = tiny_en.decode_batch(windows, TranscribeOptions(temperatures=(0.0,)))
    for chunk in chunks:
        heads, rows, frames = chunk.attention.shape
        assert frames == chunk.window.num_frames < 1500
        assert rows == chunk.token_count + 1 == len(chunk.token_probabilities) + 1
        assert heads == 8  # tiny.en's alignment heads
        for segment in chunk.segments:
            assert 0.0 <= segment.start <= segment.end <= chunk.window.duration


def test_sample_words_come_out_in_order(tiny_en: Decoder, windows: list[Window]) -> None:
    chunks = tiny_en.decode_batch(windows, TranscribeOptions())
    text = " ".join(s.text.strip() for c in chunks for s in c.segments).lower()
    assert "small house near the river" in text
    assert "meet at the station" in text


def test_english_only_model_refuses_translation_and_other_languages(tiny_en: Decoder, windows: list[Window]) -> None:
    from onepass_whisper.domain.errors import InvalidOptionError, UnsupportedLanguageError

    with pytest.raises(InvalidOptionError) as refused:
        tiny_en.decode_batch(windows[:1], TranscribeOptions(task="translate"))
    assert refused.value.option == "task"  # the domain's option, not the CLI's flag (the API has no --task)
    with pytest.raises(UnsupportedLanguageError):
        tiny_en.decode_batch(windows[:1], TranscribeOptions(language="de"))


def test_decoder_has_the_models_alignment_heads(tiny_en: Decoder) -> None:
    assert isinstance(tiny_en, MlxWhisperDecoder)
    assert tiny_en.alignment_heads == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]


# -- the logit rules at any batch size (no model needed) ------------------------------------------------------

TOKENIZER = get_tokenizer(False)
TB = TOKENIZER.timestamp_begin
EOT = TOKENIZER.eot


def _rules() -> LogitRules:
    return LogitRules(
        n_vocab=51864, eot=EOT, timestamp_begin=TB, no_timestamps=TOKENIZER.no_timestamps,
        suppress=[TOKENIZER.sot], blank=[EOT], max_initial_timestamp_index=50,
    )  # fmt: skip


def _allowed(logits: mx.array, state: TimestampState, first_step: bool, host: bool) -> np.ndarray:
    """The tokens the rules allow, by the MLX mask or by its numpy flavour."""
    rules = _rules()
    masked = rules.apply_host(np.array(logits), state, first_step) if host else rules.apply(logits, state, first_step)
    allowed: np.ndarray = np.isfinite(np.array(masked))
    return allowed


@pytest.mark.parametrize("host", [False, True])
def test_first_step_allows_only_early_timestamps_for_every_row(host: bool) -> None:
    masked = _allowed(mx.zeros((3, 51864)), TimestampState.initial(3), first_step=True, host=host)
    assert not masked[:, :TB].any()
    assert masked[:, TB : TB + 51].all() and not masked[:, TB + 51 :].any()


@pytest.mark.parametrize("host", [False, True])
def test_timestamp_rules_follow_each_rows_own_history(host: bool) -> None:
    # row 0: "<|1.00|> text"; row 1: "<|1.00|> text <|2.00|>"; row 2: "<|0.00|> text text"; row 3: "<|1.00|>"
    histories = [[TB + 50, 400], [TB + 50, 400, TB + 100], [TB, 300, 301], [TB + 50]]
    state = TimestampState.initial(4)
    for step in range(3):
        rows = np.array([row for row, h in enumerate(histories) if len(h) > step])
        going = state.select(rows).after(np.array([histories[row][step] for row in rows]), TB)
        state = TimestampState(
            _merge(state.last_was_timestamp, rows, going.last_was_timestamp),
            _merge(state.penultimate_was_timestamp, rows, going.penultimate_was_timestamp),
            _merge(state.last_timestamp, rows, going.last_timestamp),
            state.finish_below,
            going.sampled,
        )
    # make text likelier than timestamps so only the hard rules decide
    logits = mx.broadcast_to(mx.where(mx.arange(51864) < TB, 10.0, 0.0), (4, 51864))
    allowed = _allowed(logits, state, first_step=False, host=host)
    # row 0 after text: text allowed, a closing timestamp only after 1.00 s (segments have non-zero length)
    assert allowed[0, 400] and not allowed[0, TB + 50] and allowed[0, TB + 51]
    # row 1 after "text <|2.00|>": the next must be a timestamp >= 2.00 s or end-of-text, not text
    assert not allowed[1, 400] and allowed[1, EOT] and allowed[1, TB + 100] and not allowed[1, TB + 99]
    # row 2 after text: timestamps from 0.02 s on
    assert allowed[2, 400] and not allowed[2, TB] and allowed[2, TB + 1]
    # row 3 after its opening timestamp alone: text must follow, not a second timestamp
    assert allowed[3, 400] and not allowed[3, TB + 60]


@pytest.mark.parametrize("host", [False, True])
def test_a_segment_opened_with_sound_enough_after_it_is_transcribed_not_left(host: bool) -> None:
    # every row: "<|0.00|> text <|1.00|><|1.00|>" (a segment closed at 1.00 s and the next opened there)
    state = TimestampState.initial(3, finish_below=np.array([TB + 100, TB + 50, 0]))
    for token in (TB, 400, TB + 50, TB + 50):
        state = state.after(np.full(3, token), TB)
    allowed = _allowed(mx.zeros((3, 51864)), state, first_step=False, host=host)
    # row 0: more sound follows 1.00 s than the bound allows to leave: text must follow, not end-of-text
    assert not allowed[0, EOT] and allowed[0, 400]
    # row 1: the opening is at the bound (the last second of sound): Whisper may leave it, as openai-whisper
    # row 2: no bound (a window of silence)
    assert allowed[1, EOT] and allowed[2, EOT]


@pytest.mark.parametrize("host", [False, True])
def test_a_window_may_still_end_right_after_its_first_timestamp(host: bool) -> None:
    # "<|0.00|>" then end-of-text: the model says the window holds no speech; the bound does not force text
    state = TimestampState.initial(2, finish_below=np.array([TB + 1000, TB + 1000])).after(np.full(2, TB), TB)
    allowed = _allowed(mx.zeros((2, 51864)), state, first_step=False, host=host)
    assert allowed[:, EOT].all()


def _merge(old: np.ndarray, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    out = old.copy()
    out[rows] = new
    result: np.ndarray = out  # a typed name: numpy's stubs give Any here for Python 3.10
    return result


def test_segments_split_at_timestamp_pairs_and_keep_trailing_text() -> None:
    hello, world = TOKENIZER.encode(" hello"), TOKENIZER.encode(" world")
    tokens = [TB + 0, *hello, TB + 50, TB + 50, *world, TB + 100, TB + 150, *hello]
    segments = split_segments(tokens, TOKENIZER, duration=5.0)
    assert [(s.start, s.end, s.text) for s in segments] == [
        (0.0, 1.0, " hello"), (1.0, 2.0, " world"), (3.0, 5.0, " hello"),
    ]  # fmt: skip
    assert segments[0].words == (" hello",)


@pytest.mark.parametrize("host_math", [False, True])
def test_our_encoder_equals_mlx_whispers(tiny_en: MlxWhisperDecoder, host_math: bool) -> None:
    # the GPU path (fused attention) and the CPU path (attention and GELU in numpy/scipy): the same layers must
    # give mlx-whisper's features
    from onepass_whisper.adapters.mlx.encoder import encode, encode_on_host

    mels = mx.random.normal((2, 3000, tiny_en.model.dims.n_mels), key=mx.random.key(0))
    expected, actual = tiny_en.model.encoder(mels), (encode_on_host if host_math else encode)(tiny_en.model, mels)
    assert actual.shape == expected.shape
    assert float(mx.abs(actual - expected).max()) < 1e-3


def test_single_timestamp_ending_is_read_as_whisper_does() -> None:
    from onepass_whisper.adapters.mlx.segments import single_timestamp_ending

    begin = TOKENIZER.timestamp_begin
    text = TOKENIZER.encode(" hello")
    assert single_timestamp_ending([begin, *text, begin + 50], begin)  # "<|0.00|> hello<|1.00|>": closed
    assert not single_timestamp_ending([begin, *text, begin + 50, begin + 50], begin)  # a pair: more may follow
    assert not single_timestamp_ending([begin, *text], begin)  # cut off in the middle of a segment
    assert not single_timestamp_ending([], begin)


@pytest.mark.parametrize("length", [1, 8000, N_SAMPLES - 400, N_SAMPLES - 1, N_SAMPLES])
def test_a_windows_mel_equals_mlx_whispers_over_30_s_of_padding(length: int) -> None:
    samples = (0.1 * np.random.default_rng(length).standard_normal(length)).astype(np.float32)
    samples[-5:] *= 40  # the loudest frames at the window's end: the spectrogram's maximum sets its floor
    reference = log_mel_spectrogram(mx.array(samples), 80, padding=N_SAMPLES)[:N_FRAMES]

    np.testing.assert_array_equal(np.array(window_mel(samples, 80)), np.array(reference))


@pytest.mark.slow
def test_a_batch_reports_its_progress_while_it_decodes(tiny_en: Decoder, windows: list[Window]) -> None:
    shares: list[float] = []
    chunks = tiny_en.decode_batch(windows, TranscribeOptions(temperatures=(0.0,)), shares.append)
    assert len(chunks) == len(windows)
    assert len(shares) > len(windows)  # more often than once a window: steps, not only finished sequences
    assert shares == sorted(shares) and 0.0 < shares[0] < 0.5 and shares[-1] == pytest.approx(1.0)
