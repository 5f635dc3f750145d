"""Read an audio file as 16 kHz mono float32: the stack ``librosa.load`` uses, without its overhead.

``librosa.load(path, sr=16000, mono=True)`` reads with soundfile (libsndfile: WAV of any PCM or float subtype, FLAC,
OGG/Vorbis, MP3 and more), averages the channels and resamples with soxr at quality "HQ" (its default
``res_type="soxr_hq"``). This adapter calls those two libraries directly and gives the same samples (bit for bit on
WAV, FLAC, OGG and MP3 at 44.1 kHz stereo), because ``librosa.load`` costs 10-25 s on its first call here (lazy
imports) and, where libsndfile fails, falls back to audioread, which needs ffmpeg and turns a bad file into a
``NoBackendError`` with a deprecation warning. Reading in blocks, mixing and resampling each block as it comes, keeps
the peak memory near the size of the 16 kHz result instead of the whole multichannel file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import soundfile as sf
import soxr  # soxr ships a .pyi for its extension but no py.typed
from attrs import field, frozen
from attrs import validators as v
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE, Waveform
from onepass_whisper.domain.errors import AudioLoadError

BLOCK_FRAMES: Final = 1 << 18  # input frames per block: ~5.5 s at 48 kHz (measured fastest of 2^16, 2^18, 2^20)
RESAMPLE_QUALITY: Final = "HQ"  # soxr's quality as librosa's default res_type="soxr_hq"

NOT_AUDIO: Final = "not an audio file or unsupported format"
# libsndfile's public codes 1 (unrecognised format) and 4 (unsupported encoding), and 7, which it reports when its
# last-resort MPEG probe (mpg123) rejects a file: "File does not exist or is not a regular file", though it exists.
_NOT_AUDIO_CODES: Final = frozenset({1, 4, 7})


@frozen
class LibrosaAudioSource:
    """An ``AudioSource`` for what libsndfile reads: WAV, FLAC, OGG, MP3, AIFF, ... at any rate and channel count.

    Channels are averaged, NaN and infinite samples become 0 and nothing is clipped (float files may exceed 1).
    Every failure to read is an ``AudioLoadError`` with a one-line reason.
    """

    sample_rate: int = field(default=SAMPLE_RATE, validator=v.gt(0))  # Hz of the returned waveform

    def load(self, path: Path) -> Waveform:
        blocks = list(self.stream(path))
        samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        if samples.size == 0:
            raise AudioLoadError(path, "no samples")
        return Waveform(samples, self.sample_rate)

    def stream(self, path: Path) -> Iterator[NDArray[np.float32]]:
        """Blocks of samples as they are decoded: memory stays at a block, whatever the file's length."""
        try:
            with path.open("rb") as file:
                if os.fstat(file.fileno()).st_size == 0:
                    raise AudioLoadError(path, "file is empty")
                yield from self._decode(file, path)
        except OSError as exc:
            raise AudioLoadError(path, _os_reason(exc)) from exc
        except sf.LibsndfileError as exc:
            raise AudioLoadError(path, _libsndfile_reason(exc.code, exc.error_string)) from exc
        except sf.SoundFileError as exc:  # soundfile's own checks
            raise AudioLoadError(path, _first_line(str(exc)) or type(exc).__name__) from exc

    def _decode(self, file: BinaryIO, path: Path) -> Iterator[NDArray[np.float32]]:
        """``file``'s samples, mixed to mono and resampled to ``sample_rate``, block by block."""
        with sf.SoundFile(file) as sound:
            rate = int(sound.samplerate)
            resampler = None if rate == self.sample_rate else self._resampler(rate, path)
            for block in sound.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
                mono = _finite(_mix_down(block))
                part = mono if resampler is None else _float32(resampler.resample_chunk(mono))
                if part.size:
                    yield part
            if resampler is not None:
                last = _float32(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
                if last.size:
                    yield last

    def _resampler(self, rate: int, path: Path) -> soxr.ResampleStream:
        try:
            return soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        except ValueError as exc:  # soxr refuses the file's rate
            raise AudioLoadError(path, f"unsupported sample rate {rate} Hz") from exc


def _mix_down(block: NDArray[np.float32]) -> NDArray[np.float32]:
    """Average the channels of a (frames, channels) block, as ``librosa.to_mono`` does; (frames,)."""
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0])
    mixed: NDArray[np.float32] = block.mean(axis=1, dtype=np.float32)
    return mixed


def _finite(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """Replace NaN and ±inf by silence in place: one bad sample must not spread through the resampler's filter."""
    return np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _float32(samples: object) -> NDArray[np.float32]:
    return np.asarray(samples, dtype=np.float32)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return _first_line(exc.strerror or str(exc)) or type(exc).__name__


def _libsndfile_reason(code: int, message: str) -> str:
    if code in _NOT_AUDIO_CODES:
        return NOT_AUDIO
    detail = _first_line(message).rstrip(".")
    return f"corrupt or truncated audio ({detail})" if detail else "corrupt or truncated audio"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
