"""The library facade on fakes: paths and arrays in, domain ``Transcript`` out, domain errors raised, never an exit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from dependency_injector import providers

import onepass_whisper.entrypoints.api as api
from onepass_whisper.adapters.audio_array import waveform_from_array
from onepass_whisper.application.transcription import FileResult, in_input_order
from onepass_whisper.domain.audio import SAMPLE_RATE, DecodedChunk, Window
from onepass_whisper.domain.errors import (
    AudioLoadError,
    InvalidOptionError,
    ModelLoadError,
    TranscriptionError,
    UnsupportedLanguageError,
)
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from onepass_whisper.domain.ports import BatchProgress
from onepass_whisper.entrypoints.api import Transcriber, transcribe
from onepass_whisper.entrypoints.container import Container
from tests.fakes import FakeAligner, FakeDecoder, FakeModelSource, InMemoryAudioSource, tone

TEXT = "hello there world"


class StrictDecoder(FakeDecoder):
    """Refuses languages other than English, as an English-only model does; keeps the options it got."""

    def __init__(self) -> None:
        super().__init__(TEXT, name="fake.en")
        self.options: list[TranscribeOptions] = []

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        self.options.append(options)
        if options.language not in (None, "en"):
            raise UnsupportedLanguageError(options.language, "English-only model")
        return super().decode_batch(windows, options)


@pytest.fixture
def decoder() -> StrictDecoder:
    return StrictDecoder()


@pytest.fixture
def container(decoder: StrictDecoder) -> Iterator[Container]:
    c = Container()
    audio = InMemoryAudioSource({"a.wav": tone(4.0), "b.wav": tone(35.0)})
    with c.override_providers(audio=audio, decoder=decoder, aligner=FakeAligner()):
        yield c


@pytest.fixture
def transcriber(container: Container) -> Transcriber:
    return Transcriber(container=container)


def test_a_path_gives_a_transcript_with_words(transcriber: Transcriber) -> None:
    transcript = transcriber.transcribe("a.wav")
    assert isinstance(transcript, Transcript)
    assert transcript.text == TEXT and transcript.language == "en" and transcript.duration == 4.0
    assert [w.text for w in transcript.words] == [" hello", " there", " world"]
    assert transcript.segments[0].start == 0.0 and transcript.segments[0].end == 4.0


def test_a_path_object_works_too(transcriber: Transcriber) -> None:
    assert transcriber.transcribe(Path("b.wav")).duration == 35.0


def test_an_array_is_16khz_mono_samples(transcriber: Transcriber) -> None:
    samples = tone(2.5).samples
    transcript = transcriber.transcribe(samples)
    assert transcript.text == TEXT and transcript.duration == 2.5


def test_a_float64_array_is_accepted(transcriber: Transcriber) -> None:
    assert transcriber.transcribe(tone(1.0).samples.astype(np.float64)).duration == 1.0


def test_another_sample_rate_is_resampled(transcriber: Transcriber) -> None:
    """Issue 21: a 44.1-kHz array was read as 16 kHz (2.76 times too long and too low: '' from a real model)."""
    at_44k = soxr.resample(tone(2.5).samples, SAMPLE_RATE, 44_100)
    transcript = transcriber.transcribe(at_44k, sample_rate=44_100)
    assert transcript.text == TEXT and transcript.duration == pytest.approx(2.5, abs=1e-4)


def test_int16_pcm_is_scaled_as_whisper_does() -> None:
    pcm = (tone(1.0).samples * 32767).astype(np.int16)
    np.testing.assert_array_equal(waveform_from_array(pcm).samples, pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize("layout", ["frames, channels", "channels, frames"])
def test_stereo_channels_are_averaged(layout: str) -> None:
    left, right = tone(1.0).samples, np.zeros(SAMPLE_RATE, np.float32)
    stereo = np.stack([left, right], axis=1 if layout == "frames, channels" else 0)
    np.testing.assert_allclose(waveform_from_array(stereo).samples, left / 2, atol=1e-7)


def test_a_list_of_floats_is_samples(transcriber: Transcriber) -> None:
    assert transcriber.transcribe(tone(1.0).samples.tolist()).duration == 1.0


def test_nan_and_infinite_samples_are_silence() -> None:
    samples = waveform_from_array(np.array([0.5, np.nan, np.inf, -np.inf], np.float32)).samples
    np.testing.assert_array_equal(samples, [0.5, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("audio", "why"),
    [
        (np.zeros(0, np.float32), "no samples"),
        ([], "no samples"),
        (np.zeros((2, 2), np.float32), "shape"),  # which axis is the channels?
        (np.zeros((2, 3, SAMPLE_RATE), np.float32), "shape"),
        (np.zeros(SAMPLE_RATE, np.int64), "dtype int64"),  # Python ints: PCM of which width?
        ([0, 1000, -1000], "dtype int64"),
        (np.zeros(SAMPLE_RATE, bool), "dtype bool"),
        (np.zeros(SAMPLE_RATE, np.complex64), "dtype complex64"),
        ([[0.1, 0.2], [0.3]], "not a flat list"),
        (b"RIFF....WAVE", "got bytes"),
        (42, "got int"),
    ],
)
def test_samples_that_cannot_be_read_are_audio_load_errors(transcriber: Transcriber, audio: Any, why: str) -> None:
    with pytest.raises(AudioLoadError, match="<array>") as info:
        transcriber.transcribe(audio)
    assert why in str(info.value)


@pytest.mark.parametrize("rate", [0, -16_000, 44_100.5, True, "44100"])
def test_a_bad_sample_rate_is_an_invalid_option(transcriber: Transcriber, rate: Any) -> None:
    with pytest.raises(InvalidOptionError, match="sample_rate"):
        transcriber.transcribe(tone(1.0).samples, sample_rate=rate)


def test_a_sample_rate_for_a_file_is_an_invalid_option(transcriber: Transcriber) -> None:
    with pytest.raises(InvalidOptionError, match="sample_rate"):
        transcriber.transcribe("a.wav", sample_rate=44_100)


def test_options_reach_the_decoder(transcriber: Transcriber, decoder: StrictDecoder) -> None:
    transcriber.transcribe(
        "a.wav", language="en", initial_prompt="Hi.", temperatures=(0.0, 0.5), logprob_threshold=None
    )
    assert decoder.options == [
        TranscribeOptions(language="en", initial_prompt="Hi.", temperatures=(0.0, 0.5), logprob_threshold=None)
    ]


def test_without_word_timestamps_there_are_no_words(transcriber: Transcriber) -> None:
    transcript = transcriber.transcribe("a.wav", word_timestamps=False)
    assert transcript.text == TEXT and transcript.words == ()


def test_the_model_stays_loaded_across_calls(container: Container) -> None:
    loads: list[str] = []

    def load() -> FakeDecoder:
        loads.append("tiny.en")
        return FakeDecoder(TEXT)

    with container.decoder.override(providers.Singleton(load)):
        transcriber = Transcriber(container=container)
        assert loads == ["tiny.en"]  # loaded when the Transcriber is made: its errors come first
        for _ in range(3):
            transcriber.transcribe("a.wav")
        transcriber.transcribe(tone(1.0).samples)
    assert loads == ["tiny.en"]


def test_the_model_name_is_configured(container: Container) -> None:
    Transcriber("base", batch_size=2, container=container)
    assert container.config.model() == "base" and container.config.batch_size() == 2
    assert container.config.refine() is True
    Transcriber("base", refine=False, container=container)
    assert container.config.refine() is False
    assert container.config.phonetic() is False
    Transcriber("base", phonetic=True, container=container)
    assert container.config.phonetic() is True


def test_phonetic_without_pocketsphinx_is_refused_before_loading(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("onepass_whisper.entrypoints.api.phonetic_available", lambda: False)
    with pytest.raises(InvalidOptionError, match=r"pip install .pocketsphinx"):
        Transcriber(phonetic=True, container=container)


def test_many_files_share_batches_and_failures_are_results(transcriber: Transcriber, decoder: StrictDecoder) -> None:
    results = list(transcriber.transcribe_many(["a.wav", "missing.wav", "b.wav"]))
    by_name = {Path(r.source).name: r for r in results}
    assert by_name["a.wav"].transcript is not None and by_name["b.wav"].transcript is not None
    assert isinstance(by_name["missing.wav"].error, AudioLoadError)
    assert decoder.batches == [3]  # 1 + 2 windows in one batch of 8


def test_many_files_come_as_they_finish_or_in_input_order(transcriber: Transcriber) -> None:
    """A file that cannot be read is out at once, before the ones given ahead of it are decoded."""
    paths = ["a.wav", "missing.wav", "b.wav"]
    as_finished = [Path(r.source).name for r in transcriber.transcribe_many(paths)]
    in_order = [Path(r.source).name for r in transcriber.transcribe_many(paths, ordered=True)]
    assert as_finished == ["missing.wav", "a.wav", "b.wav"]
    assert in_order == paths


def test_in_input_order_with_a_file_given_twice() -> None:
    results = [FileResult(Path("b")), FileResult(Path("a")), FileResult(Path("a")), FileResult(Path("c"))]
    ordered = in_input_order(iter(results), [Path("a"), Path("b"), Path("a"), Path("c")])
    assert [r.source for r in ordered] == [Path("a"), Path("b"), Path("a"), Path("c")]


# ------------------------------------------------------------------------------------- errors are raised


def test_an_unreadable_file_raises_audio_load_error(transcriber: Transcriber) -> None:
    with pytest.raises(AudioLoadError, match="missing.wav"):
        transcriber.transcribe("missing.wav")


def test_an_unknown_model_raises_model_load_error_when_made() -> None:
    container = Container()
    with container.override_providers(model_source=FakeModelSource({})):
        with pytest.raises(ModelLoadError, match="no-such-model"):
            Transcriber("no-such-model", container=container)


def test_a_refused_language_raises(transcriber: Transcriber) -> None:
    with pytest.raises(UnsupportedLanguageError):
        transcriber.transcribe("a.wav", language="xx")


@pytest.mark.parametrize(
    "options",
    [
        {"temperatures": ()},
        {"temperatures": (-0.5,)},
        {"task": "summarise"},
        {"beam_size": 5},
    ],
)
def test_bad_options_raise_invalid_option_error(transcriber: Transcriber, options: dict[str, object]) -> None:
    with pytest.raises(InvalidOptionError):
        transcriber.transcribe("a.wav", **options)  # type: ignore[arg-type]


def test_a_bad_batch_size_raises(container: Container) -> None:
    with pytest.raises(InvalidOptionError, match="batch_size"):
        Transcriber(batch_size=0, container=container)


def test_errors_are_transcription_errors_not_exits(transcriber: Transcriber) -> None:
    with pytest.raises(TranscriptionError):
        transcriber.transcribe("missing.wav")
    with pytest.raises(TranscriptionError):
        transcriber.transcribe("a.wav", language="de")


# ------------------------------------------------------------------------------------ the one-call function


def test_transcribe_function_uses_a_fresh_container(container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "Container", lambda: container)
    transcript = transcribe("a.wav", model="tiny.en", language="en")
    assert transcript.text == TEXT
    assert container.config.model() == "tiny.en"


def test_transcribe_function_raises_domain_errors(container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "Container", lambda: container)
    with pytest.raises(AudioLoadError):
        transcribe("missing.wav")


@pytest.mark.parametrize("model", ["base", "tiny.en", "/models/mine", "large-v3"])
def test_the_container_gives_any_model_an_aligner_that_estimates_its_lag(model: str, tmp_path: Path) -> None:
    from onepass_whisper.adapters.dtw import DtwAligner, LagAligner
    from onepass_whisper.adapters.dtw.lag_store import JsonLagStore

    container = Container()
    container.config.model.from_value(model)
    container.config.cache_dir.from_value(tmp_path)
    aligner = container.aligner()
    assert aligner == LagAligner(DtwAligner())  # no model has a lag of its own in the code: each is estimated
    assert container.lag_store() == JsonLagStore.for_model(tmp_path, model)
    plain = Container()
    plain.config.refine.from_value(False)
    assert plain.aligner() == DtwAligner(refine=False)  # without the refinement no lag is taken off


@pytest.mark.parametrize(
    ("cores", "phonetic", "processes", "first_batch"),
    [(2, False, 0, None), (2, True, 2, 4), (1, True, 0, 4), (16, False, 8, None), (16, True, 8, 4)],
)
def test_phonetic_word_timing_takes_processes_at_once_even_on_two_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, phonetic: bool, processes: int, first_batch: int | None
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    monkeypatch.delenv("ONEPASS_ALIGN_PROCESSES", raising=False)
    container = Container()
    container.config.phonetic.from_value(phonetic)
    with container.override_providers(decoder=FakeDecoder(), aligner=FakeAligner()):
        service = container.service()
    assert (service.align_processes, service.align_processes_first_batch) == (processes, first_batch)


def test_the_container_wraps_the_lag_estimating_aligner_for_phonetic_edges() -> None:
    from onepass_whisper.adapters.dtw import DtwAligner, LagAligner
    from onepass_whisper.adapters.phonetic import PhoneticAligner, PhoneticLagAligner

    container = Container()
    container.config.model.from_value("base")
    container.config.phonetic.from_value(True)
    aligner = container.aligner()
    assert aligner == PhoneticLagAligner(LagAligner(DtwAligner()))
    assert aligner.with_lag(-0.07) == PhoneticAligner(DtwAligner(lag_seconds=-0.07))  # the second phase
