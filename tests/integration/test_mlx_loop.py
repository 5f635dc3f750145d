"""The GPU flavour of the decoder (lagged loop, device-side timestamp state, explicit cross-attention), run on the
CPU backend: same tokens, rows and word times as the CPU flavour."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_whisper.tokenizer import get_tokenizer

from onepass_whisper.adapters.audio_file import FileAudioSource
from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.adapters.mlx import load_decoder, loop
from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
from onepass_whisper.adapters.mlx.encoder import encode_on_host
from onepass_whisper.adapters.mlx.loop import BatchResults, DeviceRows
from onepass_whisper.adapters.mlx.rules import DeviceTimestampState, LogitRules, TimestampState, device_scores
from onepass_whisper.adapters.mlx.step.factory import DeviceBackend, HostBackend
from onepass_whisper.adapters.mlx.step.graph import GraphStep
from onepass_whisper.adapters.mlx.step.host import HostStep
from onepass_whisper.adapters.mlx.weights import decoder_weights
from onepass_whisper.domain.audio import Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.windowing import split_into_windows

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"
TOKENIZER = get_tokenizer(False)
TB, EOT = TOKENIZER.timestamp_begin, TOKENIZER.eot


def english_rules(compiled: bool = False) -> LogitRules:
    """tiny.en's rules: its vocabulary, start-of-transcript suppressed, a first timestamp within 1 s."""
    return LogitRules(
        n_vocab=51864, eot=EOT, timestamp_begin=TB, no_timestamps=TOKENIZER.no_timestamps,
        suppress=[TOKENIZER.sot], blank=[EOT], max_initial_timestamp_index=50, compiled=compiled,
    )  # fmt: skip


@pytest.fixture(scope="module")
def windows() -> list[Window]:
    samples = FileAudioSource().load(SAMPLE).samples
    windows = split_into_windows(samples, source=0, max_seconds=4.0)
    first = windows[0]
    return [*windows, Window(0, len(windows), 0.0, first.samples[: len(first.samples) // 2])]


@pytest.fixture(scope="module")
def lagged(tiny_en_folder: Path) -> MlxWhisperDecoder:
    decoder = load_decoder(tiny_en_folder, "tiny.en")
    assert isinstance(decoder, MlxWhisperDecoder)
    # the device flavour (GraphStep, the lagged loop) on MLX's CPU backend
    return MlxWhisperDecoder(
        decoder.model,
        "tiny.en",
        decoder.alignment_heads,
        backend=DeviceBackend(decoder.model, decoder.alignment_heads, gpu=False),
    )


# 6: every sequence is cut at the length limit; read_every 3: reads of several steps, compactions between them
@pytest.mark.parametrize(("max_new_tokens", "read_every"), [(None, 1), (None, 3), (6, 3)])
def test_lagged_loop_gives_the_synced_loops_results(
    tiny_en: MlxWhisperDecoder,
    lagged: MlxWhisperDecoder,
    windows: list[Window],
    max_new_tokens: int | None,
    read_every: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(tiny_en.backend, HostBackend)  # the CPU backend's default
    monkeypatch.setattr(loop, "ROWS_BLOCK", 4)  # the lagged loop's rows across several device blocks
    monkeypatch.setattr(loop, "READ_EVERY", read_every)
    options = TranscribeOptions(temperatures=(0.0,), max_new_tokens=max_new_tokens)
    synced_chunks, lagged_chunks = tiny_en.decode_batch(windows, options), lagged.decode_batch(windows, options)
    aligner = DtwAligner()
    for a, b in zip(synced_chunks, lagged_chunks, strict=True):
        assert [s.text for s in a.segments] == [s.text for s in b.segments]
        assert a.attention.shape == b.attention.shape
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-3)
        np.testing.assert_allclose(a.token_probabilities, b.token_probabilities, atol=1e-3)
        assert a.avg_logprob == pytest.approx(b.avg_logprob, abs=1e-3)
        words_a = [(w.text, w.start, w.end) for seg in aligner.align(a) for w in seg]
        words_b = [(w.text, w.start, w.end) for seg in aligner.align(b) for w in seg]
        assert words_a == words_b


def test_batch_results_keep_each_sequences_rows_across_compaction_and_late_reads() -> None:
    # 3 sequences, 2 heads, 4 frames; row values encode (sequence, step)
    results = BatchResults(3, eot=EOT, limit=3)

    def rows(active: list[int], step: int) -> np.ndarray:
        return np.array([[[10 * s + step] * 4] * 2 for s in active], np.float32)

    ones = np.ones(3, np.float32)
    everyone = np.arange(3)
    results.add(everyone, rows([0, 1, 2], 0), np.array([5, EOT, 7]), ones, ones)  # 1 ends at step 0
    results.add(everyone, rows([0, 1, 2], 1), np.array([6, 8, 8]), ones, ones)  # 1's row is read late: ignored
    kept = np.array([0, 2])
    results.add(kept, rows([0, 2], 2), np.array([EOT, 9]), ones, ones)
    assert results.tokens == [[5, 6], [], [7, 8, 9]]
    assert list(results.done) == [True, True, False]
    attention = results.attention(heads=2)
    assert [a.shape for a in attention] == [(2, 3, 4), (2, 1, 4), (2, 3, 4)]  # 2 has no end-of-text row: cut
    assert attention[0][0, :, 0].tolist() == [0, 1, 2]
    assert attention[1][0, :, 0].tolist() == [10]
    assert attention[2][1, :, 0].tolist() == [20, 21, 22]
    assert results.sum_logprobs.tolist() == [3.0, 1.0, 3.0]


def test_device_rows_put_each_step_at_its_sequences_row_across_blocks_and_compaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "ROWS_BLOCK", 2)
    rows = DeviceRows(3)
    active = [0, 1, 2]
    for step in range(5):
        if step == 2:
            active = [0, 2]  # 1 has ended: the batch is compacted
        values = mx.array([[[10 * s + step] * 4] * 2 for s in active], mx.float16)  # (sequence, step)
        mx.eval(rows.write(mx.array(active), values))
    read = rows.read()
    assert read.shape == (5, 3, 2, 4) and read.dtype == np.float32  # steps × sequences × heads × frames
    assert read[:, 0, 1, 3].tolist() == [0, 1, 2, 3, 4]
    assert read[:2, 1, 0, 0].tolist() == [10, 11]  # its later rows are never read (its end is known)
    assert read[:, 2, 0, 2].tolist() == [20, 21, 22, 23, 24]
    results = BatchResults(3, eot=EOT, limit=5)
    results.rows[:] = [5, 2, 5]
    results.set_rows(read)
    attention = results.attention(heads=2)
    assert [a.shape for a in attention] == [(2, 5, 4), (2, 2, 4), (2, 5, 4)]
    assert attention[2][1, :, 0].tolist() == [20, 21, 22, 23, 24]


def test_device_timestamp_state_and_numpy_rules_mask_as_the_host_state() -> None:
    rules, compiled = english_rules(), english_rules(compiled=True)
    rng = np.random.default_rng(0)
    batch = 5
    finish = TB + rng.integers(0, 1500, batch)  # random bounds: the finished-segment rule in play too
    host, device = TimestampState.initial(batch, finish), DeviceTimestampState.initial(batch, finish)
    for step in range(8):
        # text likelier than timestamps in some rows, so that the timestamp-mass rule goes both ways
        values = rng.standard_normal((batch, 51864)).astype(np.float32)
        values[:, :TB] += rng.choice([0.0, 6.0], size=(batch, 1)).astype(np.float32)
        logits = mx.array(values)
        expected = np.array(rules.apply(logits, host, first_step=step == 0))
        np.testing.assert_array_equal(np.array(rules.apply(logits, device, first_step=step == 0)), expected)
        np.testing.assert_array_equal(np.array(compiled.apply(logits, device, first_step=step == 0)), expected)
        np.testing.assert_array_equal(rules.apply_host(values, host, first_step=step == 0), expected)
        tokens = np.where(rng.random(batch) < 0.5, TB + rng.integers(0, 1500, batch), rng.integers(0, EOT, batch))
        host, device = host.after(tokens, TB), device.after(mx.array(tokens), TB)
        if step == 4:
            host, device = host.select(np.array([0, 2, 3, 4])), device.select(mx.array([0, 2, 3, 4]))
            batch = 4


@pytest.mark.parametrize("threads", [0, 2])
def test_explicit_cross_attention_and_the_numpy_decoder_equal_the_fused_kernel(
    tiny_en: MlxWhisperDecoder, threads: int
) -> None:
    mels = mx.random.normal((3, 3000, tiny_en.model.dims.n_mels), key=mx.random.key(1))
    features = encode_on_host(tiny_en.model, mels)
    prompt = [list(TOKENIZER.sot_sequence)] * 3
    results = []
    for explicit in (False, True):  # fused, explicit on MLX
        state = GraphStep(tiny_en.model, features, tiny_en.alignment_heads, explicit_cross=explicit, fused=explicit)
        first, _ = state.step(mx.array(prompt))
        state.keep(mx.array([0, 2]))  # the batch's compaction
        logits, attention = state.step(mx.argmax(first[0][mx.array([0, 2])], axis=-1)[:, None])
        results.append((np.array(logits[0]), np.array(attention)))
    # the CPU backend's decoder, over numpy views of the same weights (its pool shares K/V and logits)
    pool = ThreadPoolExecutor(threads) if threads else None
    host = HostStep(decoder_weights(tiny_en.model), np.array(features), tiny_en.alignment_heads, pool)
    host_first, _ = host.step(np.array(prompt))
    host.keep(np.array([0, 2]))
    host_logits, host_attention = host.step(host_first[0][[0, 2]].argmax(axis=-1)[:, None])
    results.append((host_logits[0], host_attention))
    for other in results[1:]:
        np.testing.assert_allclose(results[0][0], other[0], atol=1e-3)
        np.testing.assert_allclose(results[0][1], other[1], atol=1e-4)


def test_the_numpy_decoders_compaction_keeps_each_rows_own_caches(tiny_en: MlxWhisperDecoder) -> None:
    # 4 windows; keeping rows 1 and 2 moves window 2's caches into the freed slot 0 (the rows' order is then no
    # longer the slots'), keeping row 1 of those leaves window 2 alone: every step must give what the same rows
    # give in a batch that never shrinks
    mels = mx.random.normal((4, 3000, tiny_en.model.dims.n_mels), key=mx.random.key(2))
    features = np.array(encode_on_host(tiny_en.model, mels))
    weights = decoder_weights(tiny_en.model)
    whole = HostStep(weights, features, tiny_en.alignment_heads)
    shrinking = HostStep(weights, features, tiny_en.alignment_heads)
    prompt = np.array([list(TOKENIZER.sot_sequence)] * 4)
    (logits,), _ = whole.step(prompt)
    shrinking.step(prompt)
    for rows, keep in (([1, 2], [1, 2]), ([2], [1])):  # windows left, and which of the state's rows those are
        tokens = logits.argmax(axis=-1)
        shrinking.keep(np.array(keep))
        (expected,), expected_attention = whole.step(tokens[:, None])
        (got,), got_attention = shrinking.step(tokens[rows][:, None])
        np.testing.assert_allclose(got, expected[rows], atol=1e-4)
        np.testing.assert_allclose(got_attention, expected_attention[rows], atol=1e-5)
        logits = expected
    assert shrinking.cross_k[0].shape[0] == 1


def test_lagged_loop_samples_at_a_temperature(lagged: MlxWhisperDecoder, windows: list[Window]) -> None:
    # the fallback's sampled decoding: every chunk keeps one attention row per text token, then end-of-text's
    options = TranscribeOptions(temperatures=(0.8,), max_new_tokens=20)
    for chunk in lagged.decode_batch(windows, options):
        assert chunk.attention.shape[1] == chunk.token_count + 1 == len(chunk.token_probabilities) + 1
        assert np.isfinite(chunk.attention).all()


@pytest.mark.parametrize("flavour", ["synced", "lagged"])
def test_sampled_decoding_gives_the_same_tokens_on_every_run(
    tiny_en: MlxWhisperDecoder, lagged: MlxWhisperDecoder, windows: list[Window], flavour: str
) -> None:
    # the temperature fallback draws with keys fixed per step: a file's transcript does not change between runs
    decoder = lagged if flavour == "lagged" else tiny_en
    options = TranscribeOptions(temperatures=(1.0,), max_new_tokens=20)
    first, second = decoder.decode_batch(windows, options), decoder.decode_batch(windows, options)
    mx.random.seed(12345)  # the caller's own random state plays no part
    third = decoder.decode_batch(windows, options)
    texts = [[[s.text for s in c.segments] for c in run] for run in (first, second, third)]
    assert texts[0] == texts[1] == texts[2]


@pytest.mark.parametrize("compiled", [False, True])
def test_the_greedy_pick_gives_the_rules_mask_argmax_scores_and_state(compiled: bool) -> None:
    rules = english_rules(compiled)
    rng = np.random.default_rng(1)
    batch = 6
    finish = TB + rng.integers(0, 1500, batch)
    state = DeviceTimestampState.initial(batch, finish)
    state = state.after(mx.array(TB + rng.integers(0, 50, batch)), TB)  # a first step: the pick takes the later ones
    for _ in range(10):
        values = rng.standard_normal((batch, 51864)).astype(np.float32)
        values[:, :TB] += rng.choice([0.0, 6.0], size=(batch, 1)).astype(np.float32)  # timestamps likelier or not
        logits = mx.array(values)
        masked = rules.apply(logits, state, first_step=False)
        expected_tokens = mx.argmax(masked, axis=-1)
        logprob, probability = device_scores(masked, logits, expected_tokens, EOT)
        expected_state = state.after(expected_tokens, TB)
        chosen, scores, state = rules.pick(logits, state)
        np.testing.assert_array_equal(np.array(chosen), np.array(expected_tokens))
        np.testing.assert_array_equal(np.array(scores[0]).astype(np.int64), np.array(expected_tokens))
        np.testing.assert_allclose(np.array(scores[1]), np.array(logprob), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.array(scores[2]), np.array(probability), rtol=1e-5, atol=1e-5)
        for field in ("last_was_timestamp", "penultimate_was_timestamp", "last_timestamp", "finish_below"):
            np.testing.assert_array_equal(np.array(getattr(state, field)), np.array(getattr(expected_state, field)))
        assert state.sampled == expected_state.sampled


class _WatchedReads(loop.LaggedReads):
    """``LaggedReads`` that counts the arrays it makes while reading."""

    def __init__(self, ahead: bool) -> None:
        super().__init__(ahead)
        self.reading = False
        self.made_at_reads = 0

    def read(self, results: BatchResults, newest: bool = False) -> None:
        self.reading = not newest  # the loop's last read (the newest step too) stacks what is left: its end
        try:
            super().read(results, newest)
        finally:
            self.reading = False

    def _stack(self, steps: list[tuple[int, np.ndarray, mx.array]]) -> list[mx.array]:
        made = super()._stack(steps)
        self.made_at_reads += len(made) if self.reading else 0
        return made


@settings(max_examples=40, deadline=None)
@given(read_every=st.integers(1, 5), steps=st.integers(1, 30), cuts=st.sets(st.integers(0, 29), max_size=3))
def test_scores_stacked_ahead_read_as_stacked_at_the_read_and_a_read_makes_nothing(
    read_every: int, steps: int, cuts: set[int]
) -> None:
    """The lagged loops' reads: the same tokens and scores reach the results either way, through compactions (runs
    of steps over other rows); stacked ahead, a read makes no array: it waits for earlier evaluations only, never
    for the device's queue to run dry."""
    batch = 4
    outcomes = []
    for ahead in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop, "READ_EVERY", read_every)
            rng = np.random.default_rng(steps)
            reads = _WatchedReads(ahead)
            results = BatchResults(batch, eot=-1, limit=40)
            active = np.arange(batch)
            for step in range(steps):
                tokens = rng.integers(0, 100, len(active)).astype(np.float32)
                scores = mx.array(np.stack([tokens, -tokens / 100, tokens / 100]).astype(np.float32))
                mx.eval(scores, *reads.add(active, scores))
                if reads.due():
                    reads.read(results)
                    if step in cuts and len(active) > 1:
                        active = active[1:]  # a compaction: the next steps run over fewer rows
            reads.read(results, newest=True)
            outcomes.append((results.tokens, results.probabilities, results.rows.tolist()))
            assert sum(results.rows) > 0
            if ahead:
                assert reads.made_at_reads == 0
            else:
                assert reads.made_at_reads > 0 or steps <= read_every
    assert outcomes[0] == outcomes[1]
