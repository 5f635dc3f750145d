"""Read an audio or video file as 16 kHz mono float32: libsndfile where it can, FFmpeg's decoders (PyAV) elsewhere.

``librosa.load(path, sr=16000, mono=True)`` reads with soundfile (libsndfile: WAV of any PCM or float subtype, FLAC,
OGG/Vorbis, MP3 and more), averages the channels and resamples with soxr at quality "HQ" (its default
``res_type="soxr_hq"``). This adapter calls those two libraries directly and gives the same samples (bit for bit on
WAV, FLAC, OGG and MP3 at 44.1 kHz stereo), because ``librosa.load`` costs 10-25 s on its first call here (lazy
imports) and, where libsndfile fails, falls back to audioread, which needs ffmpeg and turns a bad file into a
``NoBackendError`` with a deprecation warning. Reading in blocks, mixing and resampling each block as it comes, keeps
the peak memory near the size of the 16 kHz result instead of the whole multichannel file.

What libsndfile does not recognise (AAC and ALAC in ``.m4a``, the audio of videos: ``.mp4 .mov .mkv .webm``,
Opus in WebM, WMA) is decoded with PyAV (``adapters/av_audio.py``), whose wheels carry FFmpeg's libraries: no
ffmpeg program is needed. libsndfile stays first for what it reads: FFmpeg's MP3 and Vorbis decoders give other
samples than libsndfile's (``docs/reliability.md``), and the same file must keep giving the same transcript.

A file whose header declares more audio than it holds (a copy interrupted, a recorder that crashed) is read up to
where it stops, and ``stream`` returns its ``Truncation``: WAV (the ``data`` chunk's declared size), FLAC (the
STREAMINFO sample count), and MP4/MOV/M4A and Matroska/WebM files that state their audio track's length.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import soundfile as sf
import soxr  # soxr ships a .pyi for its extension but no py.typed
from attrs import field, frozen
from attrs import validators as v
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE, Truncation, Waveform
from onepass_whisper.domain.errors import AudioLoadError
from onepass_whisper.domain.ports import STDIN, STDIN_NAME, AudioBlocks

BLOCK_FRAMES: Final = 1 << 18  # input frames per block: ~5.5 s at 48 kHz (measured fastest of 2^16, 2^18, 2^20)
RESAMPLE_QUALITY: Final = "HQ"  # soxr's quality as librosa's default res_type="soxr_hq"
COPY_BYTES: Final = 1 << 20  # standard input is copied to a temporary file in pieces of this size

NOT_AUDIO: Final = "not an audio file or unsupported format"
# libsndfile's public codes 1 (unrecognised format) and 4 (unsupported encoding), and 7, which it reports when its
# last-resort MPEG probe (mpg123) rejects a file: "File does not exist or is not a regular file", though it exists.
_NOT_AUDIO_CODES: Final = frozenset({1, 4, 7})
_WAV_FORMATS: Final = frozenset({"WAV", "WAVEX"})  # RIFF WAVE: the declared length is read from the header


@frozen
class FileAudioSource:
    """An ``AudioSource`` for audio and video files: what libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...) and,
    through PyAV, what FFmpeg reads (M4A/AAC, MP4, MOV, MKV, WebM/Opus, WMA, ...: a video's first audio stream).

    Channels are averaged, NaN and infinite samples become 0 and nothing is clipped (float files may exceed 1).
    Every failure to read is an ``AudioLoadError`` with a one-line reason. ``STDIN`` (``-``) reads standard input,
    copied first to an anonymous temporary file (every format needs to seek: an MP4's index may be at its end).
    """

    sample_rate: int = field(default=SAMPLE_RATE, validator=v.gt(0))  # Hz of the returned waveform

    def load(self, path: Path) -> Waveform:
        blocks: list[NDArray[np.float32]] = []
        truncated = _collect(self.stream(path), blocks)
        samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        if samples.size == 0:
            raise AudioLoadError(path, "no samples")
        return Waveform(samples, self.sample_rate, truncated)

    def stream(self, path: Path) -> AudioBlocks:
        """Blocks of samples as they are decoded: memory stays at a block, whatever the file's length; then the
        file's ``Truncation`` if it holds less than it declares."""
        name: Path | str = STDIN_NAME if path == STDIN else path
        try:
            with _open(path) as file:
                if os.fstat(file.fileno()).st_size == 0:
                    raise AudioLoadError(name, "file is empty")
                return (yield from self._decode(file, name))
        except OSError as exc:
            raise AudioLoadError(name, _os_reason(exc)) from exc

    def _decode(self, file: BinaryIO, name: Path | str) -> AudioBlocks:
        try:
            sound = sf.SoundFile(file)
        except sf.LibsndfileError as exc:
            if exc.code not in _NOT_AUDIO_CODES:
                raise AudioLoadError(name, _libsndfile_reason(exc.code, exc.error_string)) from exc
        except sf.SoundFileError as exc:  # soundfile's own checks
            raise AudioLoadError(name, _first_line(str(exc)) or type(exc).__name__) from exc
        else:
            try:
                with sound:
                    return (yield from self._decode_soundfile(sound, file, name))
            except _NothingRead as failed:  # a FLAC cut inside its first block: FFmpeg keeps what is there
                return (yield from self._decode_av(file, name, failed.reason))
        return (yield from self._decode_av(file, name, None))

    def _decode_av(self, file: BinaryIO, name: Path | str, libsndfile_reason: str | None) -> AudioBlocks:
        from onepass_whisper.adapters.av_audio import (
            decode_av,
        )  # FFmpeg's libraries load only for files libsndfile cannot read

        file.seek(0)
        try:
            return (yield from self._resampled(decode_av(file, name), name))
        except AudioLoadError as exc:
            if libsndfile_reason is None:
                raise
            raise AudioLoadError(name, libsndfile_reason) from exc  # libsndfile's reason, as before

    def _decode_soundfile(self, sound: sf.SoundFile, file: BinaryIO, name: Path | str) -> AudioBlocks:
        """``sound``'s samples, mixed to mono and resampled to ``sample_rate``, block by block; then its
        ``Truncation``. A read error after some audio ends the data there (what players and ffmpeg keep)."""
        rate = int(sound.samplerate)
        declared = _declared_frames(sound, file)
        resampler = None if rate == self.sample_rate else self._resampler(rate, name)
        read, reason = 0, ""
        blocks = sound.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except sf.LibsndfileError as exc:
                if read == 0:
                    raise _NothingRead(_libsndfile_reason(exc.code, exc.error_string)) from exc
                reason = _libsndfile_detail(exc.error_string) or "corrupt or truncated audio"
                break
            read += len(block)
            mono = _finite(_mix_down(block))
            part = mono if resampler is None else _float32(resampler.resample_chunk(mono))
            if part.size:
                yield part
        if resampler is not None:
            last = _float32(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            if last.size:
                yield last
        return Truncation.check(read / rate, None if declared is None else declared / rate, reason)

    def _resampled(self, decoded: Iterator[tuple[int, NDArray[np.float32]]], name: Path | str) -> AudioBlocks:
        """Mono blocks at their rates (``(rate, samples)``, as PyAV decodes them) resampled to ``sample_rate``;
        then the ``Truncation`` that ``decoded`` returns."""
        resampler: soxr.ResampleStream | None = None
        rate = 0
        truncated: Truncation | None = None
        while True:
            try:
                block_rate, mono = next(decoded)
            except StopIteration as end:
                truncated = end.value
                break
            if block_rate != rate:  # the first block, or a stream whose rate changes: flush at the old rate
                if resampler is not None:
                    yield from _nonempty(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
                rate = block_rate
                resampler = None if rate == self.sample_rate else self._resampler(rate, name)
            yield from _nonempty(mono if resampler is None else resampler.resample_chunk(_finite(mono)))
        if resampler is not None:
            yield from _nonempty(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        return truncated

    def _resampler(self, rate: int, name: Path | str) -> soxr.ResampleStream:
        try:
            return soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        except ValueError as exc:  # soxr refuses the file's rate
            raise AudioLoadError(name, f"unsupported sample rate {rate} Hz") from exc


class _NothingRead(Exception):
    """libsndfile opened a file but failed before its first block (read whole, or not at all)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _open(path: Path) -> BinaryIO:
    """``path`` opened for reading; ``STDIN``: standard input copied into an anonymous temporary file (removed
    when closed, or when the process dies), rewound."""
    if path != STDIN:
        return path.open("rb")
    source = sys.stdin.buffer
    if source.isatty():
        raise AudioLoadError(STDIN_NAME, "standard input is a terminal: pipe audio into it (app transcribe - < a.wav)")
    spool = tempfile.TemporaryFile()
    try:
        shutil.copyfileobj(source, spool, COPY_BYTES)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _collect(blocks: AudioBlocks, into: list[NDArray[np.float32]]) -> Truncation | None:
    while True:
        try:
            into.append(next(blocks))
        except StopIteration as end:
            truncated: Truncation | None = end.value
            return truncated


def _declared_frames(sound: sf.SoundFile, file: BinaryIO) -> int | None:
    """The frames ``sound``'s header declares: libsndfile's count for FLAC (STREAMINFO's), the ``data`` chunk's
    declared size for WAV (libsndfile clips that to the file's size, which would hide a cut); else None (OGG's and
    MP3's lengths come from their data, not a header)."""
    if sound.format == "FLAC":
        return int(sound.frames) if sound.frames > 0 else None  # 0: a streamed FLAC that never knew its length
    if sound.format not in _WAV_FORMATS:
        return None
    position = file.tell()
    try:
        return _riff_data_frames(file)
    finally:
        file.seek(position)


def _riff_data_frames(file: BinaryIO) -> int | None:
    """The frame count that a RIFF WAVE header declares: the ``data`` chunk's size over ``fmt``'s block align."""
    file.seek(0)
    head = file.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None  # RIFX, RF64, W64: not parsed here
    block_align = 0
    while True:
        chunk = file.read(8)
        if len(chunk) < 8:
            return None
        kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if kind == b"data":
            if size in (0, 0xFFFFFFFF) or block_align == 0:  # a recorder that never wrote the size back
                return None
            return size // block_align
        if kind == b"fmt ":
            fmt = file.read(size)
            if len(fmt) >= 14:
                block_align = int.from_bytes(fmt[12:14], "little")
            size -= len(fmt)
        file.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to an even size


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


def _nonempty(samples: object) -> Iterator[NDArray[np.float32]]:
    part = _float32(samples)
    if part.size:
        yield part


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
    detail = _libsndfile_detail(message)
    return f"corrupt or truncated audio ({detail})" if detail else "corrupt or truncated audio"


def _libsndfile_detail(message: str) -> str:
    return _first_line(message).removeprefix("Error : ").rstrip(".")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
