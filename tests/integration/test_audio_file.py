"""FileAudioSource on files written with soundfile and PyAV: formats, rates, channels, videos, standard input, and
the ways a file can be bad or cut short."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from numpy.typing import NDArray

from onepass_whisper.adapters.audio_array import waveform_from_array
from onepass_whisper.adapters.audio_file import BLOCK_FRAMES, NOT_AUDIO, FileAudioSource
from onepass_whisper.adapters.av_audio import NO_AUDIO_STREAM
from onepass_whisper.domain.audio import SAMPLE_RATE, Truncation
from onepass_whisper.domain.errors import AudioLoadError
from onepass_whisper.domain.ports import STDIN, AudioSource
from tests import media

SECONDS = 1.5
TONE_HZ = 440.0
AMPLITUDE = 0.5
WRITE_BLOCK = 4096  # frames; libsndfile's Vorbis encoder segfaults on very large single writes


def _conforms() -> None:  # mypy-only; never called
    _a: AudioSource = FileAudioSource()


def tone(rate: int, seconds: float = SECONDS, amplitude: float = AMPLITUDE) -> NDArray[np.float64]:
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * TONE_HZ * t)  # (frames,)


def write(path: Path, frames: NDArray[np.floating], rate: int, subtype: str | None = None) -> Path:
    with sf.SoundFile(path, "w", rate, 1 if frames.ndim == 1 else frames.shape[1], subtype=subtype) as out:
        for start in range(0, len(frames), WRITE_BLOCK):
            out.write(frames[start : start + WRITE_BLOCK])
    return path


def load(path: Path) -> NDArray[np.float32]:
    waveform = FileAudioSource().load(path)
    assert waveform.sample_rate == SAMPLE_RATE
    assert waveform.samples.ndim == 1
    assert waveform.samples.dtype == np.float32
    return waveform.samples


def interior(samples: NDArray[np.floating]) -> NDArray[np.floating]:
    """Drop 0.1 s at each end, where resampling filters ring."""
    edge = SAMPLE_RATE // 10
    return samples[edge:-edge]


def load_error(path: Path) -> AudioLoadError:
    with pytest.raises(AudioLoadError) as info:
        FileAudioSource().load(path)
    assert info.value.path == path
    assert "\n" not in info.value.reason
    return info.value


LOSSLESS = [
    ("wav", "PCM_16", SAMPLE_RATE, 1, 1e-4),
    ("wav", "PCM_U8", 8_000, 1, 2e-2),  # 8-bit WAV is unsigned: steps of 1/128
    ("wav", "PCM_16", 22_050, 1, 1e-3),
    ("wav", "PCM_24", 44_100, 2, 1e-3),
    ("wav", "PCM_32", 48_000, 1, 1e-3),
    ("wav", "FLOAT", 22_050, 2, 1e-3),
    ("wav", "DOUBLE", 44_100, 1, 1e-3),
    ("flac", "PCM_16", 48_000, 2, 1e-3),
    ("flac", "PCM_24", 8_000, 1, 1e-3),
]


@pytest.mark.parametrize(("ext", "subtype", "rate", "channels", "atol"), LOSSLESS)
def test_lossless_files_load_as_16khz_mono_with_their_samples(
    tmp_path: Path, ext: str, subtype: str, rate: int, channels: int, atol: float
) -> None:
    frames = np.repeat(tone(rate)[:, None], channels, axis=1)
    samples = load(write(tmp_path / f"tone.{ext}", frames, rate, subtype))

    assert abs(len(samples) - SECONDS * SAMPLE_RATE) <= 1
    np.testing.assert_allclose(interior(samples), interior(tone(SAMPLE_RATE)[: len(samples)]), atol=atol)


@pytest.mark.parametrize(("ext", "rate"), [("ogg", 44_100), ("ogg", 16_000), ("mp3", 44_100), ("mp3", 22_050)])
def test_lossy_files_keep_their_duration_pitch_and_level(tmp_path: Path, ext: str, rate: int) -> None:
    if ext.upper() not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {ext}")
    frames = np.stack([tone(rate), tone(rate)], axis=1)
    samples = load(write(tmp_path / f"tone.{ext}", frames, rate))

    assert abs(len(samples) / SAMPLE_RATE - SECONDS) < 0.06  # codec padding
    spectrum = np.abs(np.fft.rfft(interior(samples)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(interior(samples))
    assert abs(peak_hz - TONE_HZ) < 2
    rms = float(np.sqrt(np.mean(interior(samples) ** 2)))
    assert rms == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.1)


def test_channels_are_averaged(tmp_path: Path) -> None:
    left, right = tone(SAMPLE_RATE, amplitude=0.5), tone(SAMPLE_RATE, amplitude=0.1)
    samples = load(write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SAMPLE_RATE, "FLOAT"))

    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-6)


def test_many_channels_are_averaged(tmp_path: Path) -> None:
    frames = np.stack([tone(SAMPLE_RATE, amplitude=a) for a in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)], axis=1)
    samples = load(write(tmp_path / "surround.wav", frames, SAMPLE_RATE, "FLOAT"))

    np.testing.assert_allclose(samples, tone(SAMPLE_RATE, amplitude=0.35), atol=1e-6)


def test_loud_float_samples_are_not_clipped(tmp_path: Path) -> None:
    loud = tone(SAMPLE_RATE, amplitude=1.5)
    samples = load(write(tmp_path / "loud.wav", loud, SAMPLE_RATE, "FLOAT"))

    np.testing.assert_allclose(samples, loud, atol=1e-6)
    assert samples.max() > 1.4


def test_nan_and_infinite_samples_become_silence(tmp_path: Path) -> None:
    frames = np.array([0.1, np.nan, np.inf, -np.inf, 2.5, -0.25])
    samples = load(write(tmp_path / "bad_values.wav", frames, SAMPLE_RATE, "FLOAT"))

    np.testing.assert_array_equal(samples, np.array([0.1, 0, 0, 0, 2.5, -0.25], dtype=np.float32))


def test_nan_does_not_spread_through_resampling(tmp_path: Path) -> None:
    frames = tone(44_100)
    frames[1000:1100] = np.nan
    samples = load(write(tmp_path / "nan.wav", frames, 44_100, "FLOAT"))

    assert np.isfinite(samples).all()
    assert abs(len(samples) - SECONDS * SAMPLE_RATE) <= 1


def test_another_target_rate_can_be_asked_for(tmp_path: Path) -> None:
    waveform = FileAudioSource(sample_rate=8_000).load(write(tmp_path / "t.wav", tone(44_100), 44_100))

    assert waveform.sample_rate == 8_000
    assert waveform.duration == pytest.approx(SECONDS, abs=1 / 8_000)


def test_target_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FileAudioSource(sample_rate=0)


def test_a_wav_cut_inside_its_data_loads_the_samples_present(tmp_path: Path) -> None:
    """Like players and ffmpeg, an interrupted recording is read up to where it stops (libsndfile's behaviour),
    and said to be cut short."""
    whole = write(tmp_path / "whole.wav", tone(SAMPLE_RATE), SAMPLE_RATE, "PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * SAMPLE_RATE])  # header + 1 s of 16-bit samples

    assert len(load(cut)) == SAMPLE_RATE
    assert FileAudioSource().load(cut).truncated == Truncation(duration=1.0, expected_duration=SECONDS)


# Bad inputs: each is an AudioLoadError with a short reason.


def test_missing_file(tmp_path: Path) -> None:
    assert load_error(tmp_path / "absent.wav").reason == "file not found"


def test_folder(tmp_path: Path) -> None:
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert load_error(folder).reason == "is a directory, not a file"


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    assert load_error(empty).reason == "file is empty"


def test_wav_with_no_samples(tmp_path: Path) -> None:
    silent = write(tmp_path / "none.wav", np.zeros(0), SAMPLE_RATE, "PCM_16")
    assert load_error(silent).reason == "no samples"


def test_wav_cut_inside_its_header(tmp_path: Path) -> None:
    whole = write(tmp_path / "whole.wav", tone(SAMPLE_RATE), SAMPLE_RATE, "PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:30])

    reason = load_error(cut).reason
    assert reason.startswith("corrupt or truncated audio") or reason == NOT_AUDIO


def test_wav_header_with_no_data(tmp_path: Path) -> None:
    whole = write(tmp_path / "whole.wav", tone(SAMPLE_RATE), SAMPLE_RATE, "PCM_16")
    cut = tmp_path / "header_only.wav"
    cut.write_bytes(whole.read_bytes()[:44])

    assert load_error(cut).reason == "no samples"


def test_random_bytes_named_wav(tmp_path: Path) -> None:
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    assert load_error(noise).reason == NOT_AUDIO


def test_random_bytes_named_mp3(tmp_path: Path) -> None:
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    assert load_error(noise).reason == NOT_AUDIO


def test_text_file_named_mp3(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp3"
    text.write_text("these are not the sounds you are looking for\n" * 20)
    assert load_error(text).reason == NOT_AUDIO


def test_error_message_names_the_file(tmp_path: Path) -> None:
    error = load_error(tmp_path / "absent.wav")
    assert str(error) == f"cannot read audio {tmp_path / 'absent.wav'}: file not found"


# What libsndfile cannot read: decoded with PyAV (issue 21, item 9). Files are written here with PyAV itself.


@pytest.mark.parametrize("name", sorted(media.KINDS))
def test_m4a_and_video_files_load_with_their_duration_pitch_and_level(tmp_path: Path, name: str) -> None:
    samples = load(media.kind(tmp_path / name, tone(44_100), 44_100, name))

    assert abs(len(samples) / SAMPLE_RATE - SECONDS) < 0.06  # codec priming and padding
    spectrum = np.abs(np.fft.rfft(interior(samples)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(interior(samples))
    assert abs(peak_hz - TONE_HZ) < 2
    rms = float(np.sqrt(np.mean(interior(samples) ** 2)))
    assert rms == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.1)


def test_a_video_gives_its_first_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        streams = [container.add_stream("flac", rate=SAMPLE_RATE, layout="mono") for _ in range(2)]
        for stream, hz in zip(streams, (440.0, 1000.0)):
            t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
            data = (0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    samples = load(path)
    assert abs(np.argmax(np.abs(np.fft.rfft(samples))) * SAMPLE_RATE / len(samples) - 440.0) < 2


def _todays_reader(path: Path) -> NDArray[np.float32]:
    """What this adapter read before PyAV came in, written out: libsndfile's blocks, channels averaged, soxr HQ."""
    with sf.SoundFile(path) as sound:
        stream = soxr.ResampleStream(sound.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        parts = [
            stream.resample_chunk(block.mean(axis=1, dtype=np.float32))
            for block in sound.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True)
        ]
    parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize(
    ("ext", "subtype"), [("wav", "PCM_16"), ("flac", "PCM_24"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")]
)
def test_what_libsndfile_reads_gives_the_same_samples_as_before(tmp_path: Path, ext: str, subtype: str) -> None:
    """FFmpeg's Vorbis and MP3 decoders differ from libsndfile's by up to ~6e-7: these stay on libsndfile."""
    if ext.upper() not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {ext}")
    path = write(tmp_path / f"t.{ext}", np.stack([tone(44_100), tone(44_100, amplitude=0.2)], axis=1), 44_100, subtype)
    np.testing.assert_array_equal(load(path), _todays_reader(path))


def test_a_video_without_sound_is_one_clear_error(tmp_path: Path) -> None:
    assert load_error(media.silent_video(tmp_path / "silent.mp4")).reason == NO_AUDIO_STREAM


def test_an_m4a_cut_before_its_index_is_corrupt_or_truncated(tmp_path: Path) -> None:
    memo = media.kind(tmp_path / "memo.m4a", tone(44_100), 44_100, "memo.m4a")  # the index (moov) at the end
    reason = load_error(media.cut(memo, 0.5)).reason
    assert reason.startswith("corrupt or truncated audio (an MP4/M4A file without its index")


# Cut short (issue 21, item 3): what is there is read, and the declared length is reported.


def _cut_wav(tmp_path: Path) -> Path:
    whole = write(tmp_path / "whole.wav", tone(SAMPLE_RATE, seconds=2.0), SAMPLE_RATE, "PCM_16")
    return media.cut(whole, 0.5, tmp_path / "cut.wav")


def _cut_flac(tmp_path: Path) -> Path:
    whole = write(tmp_path / "whole.flac", tone(44_100, seconds=20.0), 44_100, "PCM_16")
    return media.cut(whole, 0.5, tmp_path / "cut.flac")


def _cut_memo(tmp_path: Path) -> Path:
    whole = media.encode(
        tmp_path / "whole.m4a", tone(44_100, seconds=6.0), 44_100, fmt="ipod", codec="aac", faststart=True
    )  # the index first, as a phone writes it: the cut loses only audio
    return media.cut(whole, 0.5, tmp_path / "cut.m4a")


def _cut_webm(tmp_path: Path) -> Path:
    whole = media.kind(tmp_path / "whole.webm", tone(48_000, seconds=6.0), 48_000, "voice.webm")
    return media.cut(whole, 0.5, tmp_path / "cut.webm")


@pytest.mark.parametrize(("make", "declared"), [(_cut_wav, 2.0), (_cut_flac, 20.0), (_cut_memo, 6.0), (_cut_webm, 6.0)])
def test_a_file_cut_short_keeps_its_audio_and_says_so(
    tmp_path: Path, make: Callable[[Path], Path], declared: float
) -> None:
    waveform = FileAudioSource().load(make(tmp_path))

    assert waveform.truncated is not None
    assert waveform.truncated.expected_duration == pytest.approx(declared, abs=0.05)
    assert waveform.truncated.duration == pytest.approx(waveform.duration, abs=0.01)
    assert 0.2 * declared < waveform.duration < 0.8 * declared


@pytest.mark.parametrize("name", ["t.wav", "t.flac", "memo.m4a", "clip.mp4", "clip.mkv", "voice.webm"])
def test_a_whole_file_is_not_cut_short(tmp_path: Path, name: str) -> None:
    if name.startswith("t."):
        path = write(tmp_path / name, tone(44_100), 44_100, "PCM_16")
    else:
        path = media.kind(tmp_path / name, tone(44_100), 44_100, name)
    assert FileAudioSource().load(path).truncated is None


# Standard input (issue 21, item 7)


class _Stdin:
    def __init__(self, buffer: BinaryIO) -> None:
        self.buffer = buffer


@pytest.mark.parametrize("name", ["t.wav", "memo.m4a"])
def test_standard_input_reads_as_the_file_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    if name == "t.wav":
        path = write(tmp_path / name, tone(44_100), 44_100, "PCM_16")
    else:
        path = media.kind(tmp_path / name, tone(44_100), 44_100, name)  # its index at the end: needs seeking
    with path.open("rb") as piped:
        monkeypatch.setattr(sys, "stdin", _Stdin(piped))
        samples = FileAudioSource().load(STDIN).samples
    np.testing.assert_array_equal(samples, load(path))


def test_empty_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin(io.BytesIO(b"")))
    with pytest.raises(AudioLoadError) as info:
        FileAudioSource().load(STDIN)
    assert str(info.value) == "cannot read audio <stdin>: file is empty"


# Samples in memory (the library's ``transcribe(array, sample_rate=...)``) read as a file of them would be


@pytest.mark.parametrize(("rate", "channels"), [(44_100, 1), (48_000, 2), (SAMPLE_RATE, 1)])
def test_an_array_gives_the_samples_of_a_float_wav_of_it(tmp_path: Path, rate: int, channels: int) -> None:
    frames = np.repeat(tone(rate, seconds=20.0)[:, None], channels, axis=1).astype(np.float32)  # > a block
    from_file = load(write(tmp_path / "t.wav", frames, rate, "FLOAT"))
    np.testing.assert_array_equal(waveform_from_array(frames, rate).samples, from_file)
