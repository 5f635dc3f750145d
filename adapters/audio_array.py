"""Samples handed over in memory (the library's ``Transcriber.transcribe(array, sample_rate=...)``) as a Waveform.

The rules follow what users of openai-whisper, faster-whisper and mlx-whisper hand over: float samples in [-1, 1]
at 16 kHz are taken as they are; int16 PCM (what ``wave``, ``scipy.io.wavfile`` and whisper's own ``load_audio``
read before it divides) is scaled by 1/32768, int32 by 1/2^31, uint8 (8-bit WAV) as ``(x - 128) / 128``, as
libsndfile scales them; another rate is resampled with soxr at quality "HQ" in the same blocks as a file of that rate
(the same samples as reading a float WAV of it); 2-D arrays are averaged over their channels. NaN and infinite
samples become silence, as in files. Everything else is an ``AudioLoadError`` that says what was expected, never
a bare ``TypeError``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import soxr
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE, Waveform
from onepass_whisper.domain.errors import AudioLoadError, InvalidOptionError

ARRAY_NAME: Final = "<array>"  # how errors name samples passed in memory
MAX_CHANNELS: Final = 64  # the shorter axis of a 2-D array is its channels only up to this many
BLOCK_FRAMES: Final = 1 << 18  # resampled in the blocks that files are (adapters/audio_file.py)
RESAMPLE_QUALITY: Final = "HQ"
_INTEGER_SCALES: Final = {np.dtype(np.int16): 1 / 32768, np.dtype(np.int32): 1 / 2**31}
EXPECTED: Final = (
    "give a 1-D numpy array of mono samples (float in [-1, 1], or int16/int32 PCM), or 2-D (frames, channels) "
    "or (channels, frames)"
)


def waveform_from_array(audio: object, sample_rate: object = SAMPLE_RATE) -> Waveform:
    """``audio`` (a numpy array, or a list or tuple of numbers) at ``sample_rate`` Hz as a 16 kHz mono Waveform.
    Both come from callers without a type checker too: anything else is a domain error."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise InvalidOptionError("sample_rate", f"must be a positive whole number of Hz, got {sample_rate!r}")
    array = _array(audio)
    if array.size == 0:
        raise AudioLoadError(ARRAY_NAME, "no samples")
    samples = _float_mono(array)
    samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    if sample_rate != SAMPLE_RATE:
        samples = _resample(samples, int(sample_rate))
    return Waveform(samples)


def _array(audio: object) -> NDArray[np.generic]:
    if isinstance(audio, np.ndarray):
        return audio
    if isinstance(audio, list | tuple):
        try:
            return np.asarray(audio)
        except ValueError as exc:  # ragged
            raise AudioLoadError(ARRAY_NAME, f"a list that is not a flat list of numbers: {EXPECTED}") from exc
    raise AudioLoadError(ARRAY_NAME, f"got {type(audio).__name__}: {EXPECTED}")


def _float_mono(array: NDArray[np.generic]) -> NDArray[np.float32]:
    """``array``'s samples as float32 in [-1, 1], channels averaged; (frames,)."""
    dtype = array.dtype
    if np.issubdtype(dtype, np.floating):
        samples = array.astype(np.float32, copy=False)
    elif dtype in _INTEGER_SCALES:
        samples = array.astype(np.float32) * np.float32(_INTEGER_SCALES[dtype])
    elif dtype == np.uint8:
        samples = (array.astype(np.float32) - 128.0) / np.float32(128.0)
    else:
        raise AudioLoadError(ARRAY_NAME, f"samples of dtype {dtype}: {EXPECTED}")
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2:
        frames_axis = _frames_axis(samples.shape)
        if frames_axis is not None:
            mono: NDArray[np.float32] = samples.mean(axis=1 - frames_axis, dtype=np.float32)
            return mono
    raise AudioLoadError(ARRAY_NAME, f"an array of shape {array.shape}: {EXPECTED}")


def _frames_axis(shape: tuple[int, ...]) -> int | None:
    """Which axis of a 2-D array holds the frames: the longer one, where the shorter is a plausible channel
    count; None where that is ambiguous (a square array, or no axis of at most ``MAX_CHANNELS``)."""
    rows, columns = shape
    if rows == columns or min(rows, columns) > MAX_CHANNELS:
        return None
    return 0 if rows > columns else 1


def _resample(samples: NDArray[np.float32], rate: int) -> NDArray[np.float32]:
    try:
        stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    except ValueError as exc:
        raise InvalidOptionError("sample_rate", f"unsupported sample rate {rate} Hz") from exc
    parts = [stream.resample_chunk(samples[at : at + BLOCK_FRAMES]) for at in range(0, len(samples), BLOCK_FRAMES)]
    parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate([np.asarray(part, dtype=np.float32) for part in parts])
