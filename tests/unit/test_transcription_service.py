"""The application service edge to edge, with fake adapters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from attrs import evolve

from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.domain.audio import SAMPLE_RATE, DecodedChunk, Truncation, Waveform, Window
from onepass_whisper.domain.errors import AudioLoadError
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import AudioBlocks, BatchProgress
from tests.fakes import FakeAligner, FakeDecoder, InMemoryAudioSource, tone


def service(waveforms: dict[str, Waveform], batch_size: int = 4, text: str = "hello world") -> TranscriptionService:
    return TranscriptionService(
        audio=InMemoryAudioSource(waveforms), decoder=FakeDecoder(text), aligner=FakeAligner(), batch_size=batch_size
    )


def test_one_file_gives_words_in_file_time() -> None:
    transcript = service({"a.wav": tone(4.0)}).transcribe(Path("a.wav"), TranscribeOptions())
    assert transcript.text == "hello world"
    assert [w.text for w in transcript.words] == [" hello", " world"]
    assert transcript.duration == pytest.approx(4.0)
    assert transcript.words[0].start == pytest.approx(0.0)
    assert transcript.words[-1].end == pytest.approx(4.0)


def test_long_file_windows_are_shifted_to_file_time() -> None:
    transcript = service({"long.wav": tone(75.0)}).transcribe(Path("long.wav"), TranscribeOptions())
    starts = [segment.start for segment in transcript.segments]
    assert len(transcript.segments) == 3  # 75 s of sound with no pause: hard cuts at 30 s
    assert starts == sorted(starts)
    assert transcript.segments[1].start == pytest.approx(30.0)
    assert transcript.segments[-1].end == pytest.approx(75.0)
    assert all(0.0 <= w.start <= w.end <= 75.0 for w in transcript.words)


def test_windows_of_many_files_share_batches() -> None:
    decoder = FakeDecoder()
    svc = TranscriptionService(
        audio=InMemoryAudioSource({f"{i}.wav": tone(10.0) for i in range(5)}),
        decoder=decoder,
        aligner=FakeAligner(),
        batch_size=4,
    )
    results = list(svc.transcribe_many([Path(f"{i}.wav") for i in range(5)], TranscribeOptions()))
    assert decoder.batches == [4, 1]
    assert [r.transcript is not None for r in results] == [True] * 5


def test_a_bad_file_never_loses_the_others() -> None:
    svc = service({"good1.wav": tone(3.0), "good2.wav": tone(3.0)})
    paths = [Path("good1.wav"), Path("missing.wav"), Path("good2.wav")]
    results = {str(r.source): r for r in svc.transcribe_many(paths, TranscribeOptions())}
    assert results["good1.wav"].transcript is not None
    assert results["good2.wav"].transcript is not None
    assert isinstance(results["missing.wav"].error, AudioLoadError)
    assert "missing.wav" in str(results["missing.wav"].error)


def test_transcribe_raises_the_domain_error() -> None:
    with pytest.raises(AudioLoadError, match="nothing.wav"):
        service({}).transcribe(Path("nothing.wav"), TranscribeOptions())


def test_silence_gives_no_words() -> None:
    silence = Waveform(np.zeros(SAMPLE_RATE * 5, np.float32))
    transcript = service({"s.wav": silence}).transcribe(Path("s.wav"), TranscribeOptions())
    assert transcript.segments == ()
    assert transcript.text == ""


def test_nan_and_inf_samples_become_silence() -> None:
    samples = tone(3.0).samples.copy()
    samples[::7] = np.nan
    samples[::11] = np.inf
    transcript = service({}).transcribe_waveform(Waveform(samples), TranscribeOptions())
    assert transcript.text == "hello world"


def test_without_word_timestamps_segments_have_no_words() -> None:
    transcript = service({"a.wav": tone(4.0)}).transcribe(Path("a.wav"), TranscribeOptions(word_timestamps=False))
    assert transcript.text == "hello world"
    assert transcript.words == ()


def test_progress_moves_during_a_batch() -> None:
    """One 5-minute file is one batch of its windows: the sink hears of each window as the decoder finishes it, not
    only 0 before the batch and all after it."""
    seen: list[tuple[float, int]] = []
    svc = evolve(service({"a.wav": tone(300.0)}, batch_size=16), progress_interval=0.0)
    list(svc.transcribe_many([Path("a.wav")], TranscribeOptions(), progress=lambda d, t: seen.append((d, t))))
    total = seen[-1][1]
    assert total >= 10 and seen[-1][0] == total
    during = [d for d, t in seen if 0 < d < total]
    assert len(during) == total - 1  # the fake reports each window; the last one is the batch's end
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_progress_during_a_batch_is_throttled_and_never_goes_back() -> None:
    seen: list[float] = []

    class Jumpy(FakeDecoder):
        def decode_batch(
            self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
        ) -> list[DecodedChunk]:
            assert progress is not None
            for share in (0.5, 0.25, 0.75, 1.0):  # a decoder's retry may report less than before
                progress(share)
            return super().decode_batch(windows, options)

    svc = TranscriptionService(
        audio=InMemoryAudioSource({"a.wav": tone(65.0)}), decoder=Jumpy(), aligner=FakeAligner(), batch_size=4
    )
    list(svc.transcribe_many([Path("a.wav")], TranscribeOptions(), progress=lambda d, t: seen.append(d)))
    assert seen[-1] == 3 and seen == sorted(seen)
    assert 1.5 in seen and 0.75 not in seen and 2.25 not in seen  # 0.75 came within the interval of 0.5


def test_progress_reaches_the_total() -> None:
    seen: list[tuple[float, int]] = []
    svc = service({"a.wav": tone(65.0), "b.wav": tone(5.0)}, batch_size=2)
    list(
        svc.transcribe_many(
            [Path("a.wav"), Path("b.wav")], TranscribeOptions(), progress=lambda d, t: seen.append((d, t))
        )
    )
    assert seen[-1][0] == 4 and seen[-1][1] == 4
    assert all(d <= t for d, t in seen)


def test_results_come_as_soon_as_each_file_is_done() -> None:
    svc = service({"a.wav": tone(3.0), "b.wav": tone(95.0)}, batch_size=1)
    results = svc.transcribe_many([Path("a.wav"), Path("b.wav")], TranscribeOptions())
    first = next(results)
    assert str(first.source) == "a.wav"
    assert isinstance(svc.audio, InMemoryAudioSource)
    assert svc.audio.loaded == [Path("a.wav")]  # b.wav not read yet: inputs are read lazily


class EarlyStoppingDecoder(FakeDecoder):
    """Ends every window's text after at most 10 s, as Whisper sometimes does with speech left."""

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        chunks = super().decode_batch(windows, options)
        return [evolve(c, segments=tuple(evolve(s, end=min(s.end, 10.0)) for s in c.segments)) for c in chunks]


def test_what_the_model_left_undecoded_is_decoded_as_a_window_of_its_own() -> None:
    decoder = EarlyStoppingDecoder("one two three four five six seven eight nine ten")  # no word over 2 s
    svc = TranscriptionService(audio=InMemoryAudioSource({"a.wav": tone(25.0)}), decoder=decoder, aligner=FakeAligner())
    transcript = svc.transcribe(Path("a.wav"), TranscribeOptions())
    assert [(s.start, s.end) for s in transcript.segments] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert decoder.batches == [1, 1, 1]


def test_silence_after_a_lone_timestamp_is_not_decoded_again() -> None:
    # the model closed its last segment with a lone timestamp, and the audio agrees: the rest is silence
    class EndingDecoder(EarlyStoppingDecoder):
        def decode_batch(
            self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
        ) -> list[DecodedChunk]:
            return [evolve(c, speech_ended=True) for c in super().decode_batch(windows, options)]

    decoder = EndingDecoder()
    waveform = Waveform(np.concatenate([tone(10.0).samples, np.zeros(15 * SAMPLE_RATE, np.float32)]))
    svc = TranscriptionService(audio=InMemoryAudioSource({"a.wav": waveform}), decoder=decoder, aligner=FakeAligner())
    transcript = svc.transcribe(Path("a.wav"), TranscribeOptions())
    assert [(s.start, s.end) for s in transcript.segments] == [(0.0, 10.0)]
    assert decoder.batches == [1]


class FailingMidwaySource(InMemoryAudioSource):
    """``b.wav`` reads for 40 s, then its file turns out corrupt (a truncated FLAC frame, a network drop)."""

    def stream(self, path: Path) -> AudioBlocks:
        for index, block in enumerate(super().stream(path)):
            if path.name == "b.wav" and index * 7.0 >= 40.0:
                raise AudioLoadError(path, "corrupt or truncated audio")
            yield block
        return None


def test_a_file_failing_part_way_is_reported_and_the_others_complete() -> None:
    audio = FailingMidwaySource({"a.wav": tone(20.0), "b.wav": tone(95.0), "c.wav": tone(35.0)})
    decoder = FakeDecoder("hello world")
    svc = TranscriptionService(audio=audio, decoder=decoder, aligner=FakeAligner(), batch_size=2)
    results = {
        str(r.source): r
        for r in svc.transcribe_many([Path("a.wav"), Path("b.wav"), Path("c.wav")], TranscribeOptions())
    }
    assert set(results) == {"a.wav", "b.wav", "c.wav"}
    assert results["b.wav"].transcript is None
    assert "corrupt or truncated audio" in str(results["b.wav"].error)
    for name, seconds in (("a.wav", 20.0), ("c.wav", 35.0)):
        transcript = results[name].transcript
        assert transcript is not None and transcript.duration == pytest.approx(seconds)
        assert transcript.words and transcript.words[-1].end <= seconds


def test_audio_is_read_only_as_far_as_the_batches_need() -> None:
    # a long input is not read whole before its first window is decoded: memory stays flat in its length
    read: list[int] = []

    class CountingSource(InMemoryAudioSource):
        def stream(self, path: Path) -> AudioBlocks:
            for block in super().stream(path):
                read.append(len(block))
                yield block
            return None

    seen_at_first_batch: list[float] = []

    class Recording(FakeDecoder):
        def decode_batch(
            self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
        ) -> list[DecodedChunk]:
            if not seen_at_first_batch:
                seen_at_first_batch.append(sum(read) / SAMPLE_RATE)
            return super().decode_batch(windows, options)

    svc = TranscriptionService(
        audio=CountingSource({"long.wav": tone(3600.0)}), decoder=Recording("hi"), aligner=FakeAligner(), batch_size=2
    )
    transcript = svc.transcribe(Path("long.wav"), TranscribeOptions())
    assert transcript.duration == pytest.approx(3600.0)
    assert seen_at_first_batch[0] <= 2 * 30.0 + 60.0 + 7.0  # two windows, the cutter's lookahead and a block


def test_an_input_cut_short_keeps_its_truncation_in_the_transcript() -> None:
    """The audio source says so at the end of its blocks; the transcript carries it (issue 21, item 3)."""
    cut = Waveform(tone(40.0).samples, truncated=Truncation(40.0, 95.0))
    audio = InMemoryAudioSource({"cut.wav": cut, "whole.wav": tone(5.0)})
    svc = TranscriptionService(audio=audio, decoder=FakeDecoder("hi"), aligner=FakeAligner(), batch_size=1)
    results = {
        str(r.source): r.transcript
        for r in svc.transcribe_many([Path("cut.wav"), Path("whole.wav")], TranscribeOptions())
    }
    assert results["cut.wav"] is not None and results["cut.wav"].truncated == Truncation(40.0, 95.0)
    assert results["whole.wav"] is not None and results["whole.wav"].truncated is None
    assert svc.transcribe_waveform(cut, TranscribeOptions()).truncated == Truncation(40.0, 95.0)


class AheadDecoder(FakeDecoder):
    """A fake whose device would encode ahead: remembers what it was told to start and what each batch then was."""

    def __init__(self, encodes_ahead: bool = True) -> None:
        super().__init__()
        self._encodes_ahead = encodes_ahead
        self.calls: list[tuple[str, list[tuple[int, int]]]] = []

    @property
    def encodes_ahead(self) -> bool:
        return self._encodes_ahead

    def encode_ahead(self, windows: Sequence[Window], options: TranscribeOptions) -> None:
        self.calls.append(("ahead", [(w.source, w.index) for w in windows]))

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.calls.append(("decode", [(w.source, w.index) for w in windows]))
        return super().decode_batch(windows, options, progress)


def test_a_decoder_that_encodes_ahead_is_given_each_next_batch_before_this_one_decodes() -> None:
    waveforms = {f"{i}.wav": tone(10.0) for i in range(5)}
    paths = [Path(f"{i}.wav") for i in range(5)]
    plain = [r.transcript for r in service(waveforms, batch_size=2).transcribe_many(paths, TranscribeOptions())]
    decoder = AheadDecoder()
    svc = TranscriptionService(
        audio=InMemoryAudioSource(waveforms), decoder=decoder, aligner=FakeAligner(), batch_size=2
    )
    got = [r.transcript for r in svc.transcribe_many(paths, TranscribeOptions())]
    assert got == plain
    batches = [[(0, 0), (1, 0)], [(2, 0), (3, 0)], [(4, 0)]]
    assert decoder.calls == [
        ("ahead", batches[1]), ("decode", batches[0]), ("ahead", batches[2]), ("decode", batches[1]),
        ("decode", batches[2]),
    ]  # fmt: skip


def test_a_decoder_that_gains_nothing_from_it_is_never_asked_to_encode_ahead() -> None:
    decoder = AheadDecoder(encodes_ahead=False)
    svc = TranscriptionService(
        audio=InMemoryAudioSource({f"{i}.wav": tone(10.0) for i in range(3)}),
        decoder=decoder, aligner=FakeAligner(), batch_size=2,
    )  # fmt: skip
    list(svc.transcribe_many([Path(f"{i}.wav") for i in range(3)], TranscribeOptions()))
    assert [kind for kind, _ in decoder.calls] == ["decode", "decode"]
