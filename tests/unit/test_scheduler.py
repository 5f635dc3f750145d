"""The cross-request batch scheduler with fake adapters: shared batches, routing, cancellation, faults, limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.application.scheduler_records import QueueFullError, SchedulerClosedError
from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.domain.audio import SAMPLE_RATE, DecodedChunk, Waveform, Window
from onepass_whisper.domain.errors import AudioLoadError, ModelLoadError
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from onepass_whisper.domain.ports import BatchProgress
from tests.fakes import FakeAligner, FakeDecoder, InMemoryAudioSource, LabelDecoder, tone

OPTIONS = TranscribeOptions()
WAIT = 10.0  # seconds a test waits for a future before failing


@pytest.fixture
def gate() -> threading.Event:
    return threading.Event()


@pytest.fixture
def decoder(gate: threading.Event) -> LabelDecoder:
    return LabelDecoder(gate=gate)


@pytest.fixture
def scheduler(decoder: LabelDecoder) -> Iterator[BatchScheduler]:
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=4, gather_seconds=0.0, align_workers=2) as running:
        yield running


def labelled(seconds: float, label: int) -> Waveform:
    """A tone whose amplitude in thousandths is ``label``: ``LabelDecoder`` says ``w<label>`` in its windows."""
    return tone(seconds, amplitude=label / 1000)


def words(transcript: Transcript) -> list[str]:
    return [w.text.strip() for w in transcript.words]


def test_windows_of_several_requests_share_a_batch(
    scheduler: BatchScheduler, decoder: LabelDecoder, gate: threading.Event
) -> None:
    first = scheduler.submit(labelled(5.0, 100), OPTIONS)  # decoded alone: the loop takes it at once
    assert decoder.entered.wait(WAIT)
    others = [scheduler.submit(labelled(5.0, 200 + i), OPTIONS) for i in range(3)]  # queued meanwhile
    gate.set()
    assert words(first.future.result(WAIT)) == ["w100"]
    for i, ticket in enumerate(others):
        assert words(ticket.future.result(WAIT)) == [f"w{200 + i}"]
    assert [len({source for source, _ in batch}) for batch in decoder.batches] == [1, 3]
    assert scheduler.stats().batches[-1].requests == 3


def test_no_word_reaches_another_request(decoder: LabelDecoder, gate: threading.Event) -> None:
    rng = np.random.default_rng(7)
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=5, gather_seconds=0.01) as scheduler:
        lengths = rng.uniform(1.0, 95.0, size=12)
        tickets = [(100 + i, scheduler.submit(labelled(float(s), 100 + i), OPTIONS)) for i, s in enumerate(lengths)]
        gate.set()  # all queued before the first batch is decoded
        for label, ticket in tickets:
            transcript = ticket.future.result(WAIT)
            assert set(words(transcript)) == {f"w{label}"}
            assert len(transcript.segments) == int(np.ceil(lengths[label - 100] / 30.0))  # one per window
    assert any(len({source for source, _ in batch}) > 1 for batch in decoder.batches)


def test_words_are_in_time_order_in_file_time(scheduler: BatchScheduler, gate: threading.Event) -> None:
    gate.set()
    transcript = scheduler.submit(labelled(100.0, 300), OPTIONS).future.result(WAIT)
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
    assert transcript.segments[-1].end == pytest.approx(100.0)
    assert transcript.duration == pytest.approx(100.0)


def test_a_short_request_is_answered_before_a_long_one_ends(decoder: LabelDecoder, gate: threading.Event) -> None:
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=2, gather_seconds=0.0) as scheduler:
        long = scheduler.submit(labelled(300.0, 100), OPTIONS)  # 10 windows: 5 batches of 2
        assert decoder.entered.wait(WAIT)
        short = scheduler.submit(labelled(3.0, 200), OPTIONS)
        gate.set()
        assert words(short.future.result(WAIT)) == ["w200"]
        assert not long.future.done() or len(decoder.batches) < 6
        assert words(long.future.result(WAIT)) == ["w100"] * 10
    short_batch = next(i for i, batch in enumerate(decoder.batches) if any(s == short.number for s, _ in batch))
    assert short_batch < len(decoder.batches) - 1  # it did not wait for the long request's last window


def test_a_cancelled_request_leaves_the_queue(
    scheduler: BatchScheduler, decoder: LabelDecoder, gate: threading.Event
) -> None:
    first = scheduler.submit(labelled(5.0, 100), OPTIONS)
    assert decoder.entered.wait(WAIT)
    gone = scheduler.submit(labelled(200.0, 200), OPTIONS)
    kept = scheduler.submit(labelled(5.0, 300), OPTIONS)
    gone.cancel()
    gate.set()
    assert words(first.future.result(WAIT)) == ["w100"]
    assert words(kept.future.result(WAIT)) == ["w300"]
    assert gone.future.cancelled()
    decoded = {source for batch in decoder.batches for source, _ in batch}
    assert gone.number not in decoded
    assert scheduler.stats().cancelled == 1
    assert scheduler.stats().in_flight == 0


def test_a_failing_request_does_not_fail_the_others(gate: threading.Event) -> None:
    decoder = LabelDecoder(gate=gate, fail_amplitude=0.666)
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=8, gather_seconds=0.0) as scheduler:
        blocker = scheduler.submit(labelled(2.0, 100), OPTIONS)
        assert decoder.entered.wait(WAIT)
        good = [scheduler.submit(labelled(40.0, 200 + i), OPTIONS) for i in range(2)]
        bad = scheduler.submit(labelled(40.0, 666), OPTIONS)
        gate.set()
        assert words(blocker.future.result(WAIT)) == ["w100"]
        with pytest.raises(RuntimeError, match="decoder failed"):
            bad.future.result(WAIT)
        for i, ticket in enumerate(good):
            assert words(ticket.future.result(WAIT)) == [f"w{200 + i}"] * 2
        assert scheduler.stats().failed == 1


def test_a_full_queue_refuses_with_a_retry_time(decoder: LabelDecoder, gate: threading.Event) -> None:
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=2, gather_seconds=0.0, max_requests=2) as scheduler:
        tickets = [scheduler.submit(labelled(3.0, 100 + i), OPTIONS) for i in range(2)]
        with pytest.raises(QueueFullError) as refused:
            scheduler.submit(labelled(3.0, 300), OPTIONS)
        assert refused.value.retry_after >= 1
        gate.set()
        for ticket in tickets:
            ticket.future.result(WAIT)
        assert words(scheduler.submit(labelled(3.0, 300), OPTIONS).future.result(WAIT)) == ["w300"]


def test_close_drains_the_requests_in_flight_and_refuses_new_ones(decoder: LabelDecoder, gate: threading.Event) -> None:
    scheduler = BatchScheduler(lambda: decoder, FakeAligner(), batch_size=2, gather_seconds=0.0)
    tickets = [scheduler.submit(labelled(40.0, 100 + i), OPTIONS) for i in range(3)]
    closer = threading.Thread(target=scheduler.close)
    closer.start()
    while not scheduler.closing:
        pass
    with pytest.raises(SchedulerClosedError):
        scheduler.submit(labelled(3.0, 300), OPTIONS)
    gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert [words(t.future.result(0)) for t in tickets] == [[f"w{100 + i}"] * 2 for i in range(3)]


def test_the_gathering_wait_lets_requests_that_arrive_together_share_a_batch() -> None:
    decoder = LabelDecoder()
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=8, gather_seconds=1.0) as scheduler:
        tickets = [scheduler.submit(labelled(3.0, 100 + i), OPTIONS) for i in range(3)]
        for ticket in tickets:
            ticket.future.result(WAIT)
    assert [len(batch) for batch in decoder.batches] == [3]


def test_a_full_batch_does_not_wait_for_the_gathering_time() -> None:
    decoder = LabelDecoder()
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=2, gather_seconds=60.0) as scheduler:
        tickets = [scheduler.submit(labelled(3.0, 100 + i), OPTIONS) for i in range(2)]
        for ticket in tickets:
            ticket.future.result(WAIT)  # within WAIT, far less than the 60-s gathering time


def test_requests_with_different_options_are_not_decoded_together() -> None:
    decoder = LabelDecoder()
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=8, gather_seconds=0.5) as scheduler:
        a = scheduler.submit(labelled(3.0, 100), OPTIONS)
        b = scheduler.submit(labelled(3.0, 200), TranscribeOptions(initial_prompt="Names: Ada."))
        c = scheduler.submit(labelled(3.0, 300), OPTIONS)
        for ticket in (a, b, c):
            ticket.future.result(WAIT)
    assert sorted(sorted(s for s, _ in batch) for batch in decoder.batches) == [[a.number, c.number], [b.number]]


def test_empty_audio_is_refused_at_once(scheduler: BatchScheduler) -> None:
    with pytest.raises(AudioLoadError, match="no samples"):
        scheduler.submit(Waveform(np.zeros(0, np.float32)), OPTIONS)


def test_the_transcript_equals_the_services() -> None:
    waveform = Waveform(np.concatenate([tone(50.0).samples, np.zeros(SAMPLE_RATE * 3, np.float32), tone(20).samples]))
    service = TranscriptionService(
        audio=InMemoryAudioSource({"a.wav": waveform}), decoder=FakeDecoder(), aligner=FakeAligner(), batch_size=4
    )
    expected = service.transcribe(Path("a.wav"), OPTIONS)
    with BatchScheduler(lambda: FakeDecoder(), FakeAligner(), batch_size=4, gather_seconds=0.0) as scheduler:
        got = scheduler.submit(waveform, OPTIONS).future.result(WAIT)
    assert got == expected


def test_a_decoder_that_cannot_be_built_raises_at_construction() -> None:
    def no_model() -> LabelDecoder:
        raise ModelLoadError("nonesuch", "unknown model")

    with pytest.raises(ModelLoadError, match="nonesuch"):
        BatchScheduler(no_model, FakeAligner())


def test_the_decoder_is_built_and_used_on_the_schedulers_own_thread() -> None:
    threads: list[str] = []

    class ThreadBound(LabelDecoder):
        def __init__(self) -> None:
            super().__init__()
            threads.append(threading.current_thread().name)

        def decode_batch(
            self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
        ) -> list[DecodedChunk]:
            threads.append(threading.current_thread().name)
            return super().decode_batch(windows, options, progress)

    with BatchScheduler(ThreadBound, FakeAligner()) as scheduler:
        scheduler.submit(labelled(3.0, 100), OPTIONS).future.result(WAIT)
    assert threads == ["batch-scheduler", "batch-scheduler"]


def test_the_server_s_transcripts_carry_each_window_s_language_and_the_main_one() -> None:
    """The scheduler builds transcripts as the service does (``domain.language.transcript_of``)."""

    def by_offset(window: Window) -> tuple[str, float]:
        return ("fr", 0.9) if window.offset < 30 else ("de", 0.4)

    decoder = FakeDecoder(multilingual=True, detect=by_offset)
    with BatchScheduler(lambda: decoder, FakeAligner(), batch_size=4, gather_seconds=0.0) as running:
        transcript = running.submit(tone(45.0), OPTIONS).future.result(WAIT)
        silent = running.submit(tone(2.0, 0.0), OPTIONS).future.result(WAIT)
    assert [(s.language, s.language_probability) for s in transcript.segments] == [("fr", 0.9), ("de", 0.4)]
    assert (transcript.language, transcript.language_probability, transcript.doubts) == ("fr", 0.9, ())
    assert [d.kind for d in silent.doubts] == ["no_speech"]
