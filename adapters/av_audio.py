"""Decode the first audio stream of what FFmpeg reads (M4A/AAC, MP4, MOV, MKV, WebM/Opus, WMA...) with PyAV.

PyAV's wheels carry FFmpeg's libraries, so no ffmpeg program is needed (openai-whisper and mlx-whisper run the
program; faster-whisper decodes with PyAV, as here). Packets are demuxed and decoded one at a time and gathered into
blocks of about ``BLOCK_FRAMES`` mono samples, so memory stays at a block whatever the file's length. Channels are
averaged (as for libsndfile's formats); resampling is the caller's (soxr, as for every other file).

The length a file declares is read where the container states it exactly: an MP4/MOV/M4A track's duration (its
``mdhd`` box), a FLAC file's STREAMINFO sample count, a Matroska/WebM track's ``DURATION`` tag (ffmpeg and most muxers write it), or a Matroska file's
segment duration when the audio is its only stream. Raw ADTS AAC and MP3 durations are FFmpeg's estimates from the
bit rate, not declarations, and are not used. A packet that fails to demux or decode after some audio ends the data
there (the rest of a cut file is missing; after corruption, going on would shift every later word's time).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO, Final

import av
import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.audio_file import NOT_AUDIO  # one wording for both readers
from onepass_whisper.domain.audio import Truncation
from onepass_whisper.domain.errors import AudioLoadError

BLOCK_FRAMES: Final = 1 << 17  # mono samples gathered before resampling: ~3 s at 44.1 kHz (an AAC frame is 1024)
NO_AUDIO_STREAM: Final = "no audio stream (a video without sound)"
# FFmpeg's names of containers that hold video and sound: one with streams but no audio stream is a silent video;
# anything else without audio (a text file that FFmpeg's "tty" demuxer shows as a picture, an image) is not audio
_MEDIA_CONTAINERS: Final = frozenset(
    "mov mp4 m4a 3gp 3g2 mj2 matroska webm avi flv asf mpegts mpeg ogg nut mxf rm wtv dv".split()
)
_EBML: Final = b"\x1a\x45\xdf\xa3"  # the first bytes of every Matroska and WebM file
_DECLARING_CONTAINERS: Final = frozenset({"mov", "mp4", "m4a", "matroska", "webm", "flac"})
# sample formats: dtype and the scale that maps them to [-1, 1] (FFmpeg's own conversion, as libsndfile's)
_SCALES: Final = {"u8": 1 / 128, "s16": 1 / 32768, "s32": 1 / 2**31, "s64": 1 / 2**63, "flt": 1.0, "dbl": 1.0}

Decoded = Generator[tuple[int, NDArray[np.float32]], None, Truncation | None]  # (rate, mono samples) blocks


def decode_av(file: BinaryIO, name: Path | str) -> Decoded:
    """``file``'s first audio stream as ``(sample rate, mono float32 samples)`` blocks; then its ``Truncation``."""
    head = file.read(16)
    file.seek(0)
    try:
        container = av.open(file, mode="r")
    except av.error.FFmpegError as exc:
        raise AudioLoadError(name, _open_reason(exc, head)) from exc
    with container:
        streams = container.streams.audio
        if not streams:
            formats = set(container.format.name.split(","))
            raise AudioLoadError(
                name, NO_AUDIO_STREAM if container.streams and formats & _MEDIA_CONTAINERS else NOT_AUDIO
            )
        stream = streams[0]
        declared = _declared_seconds(container, stream)
        seconds, reason = 0.0, ""
        block = _Block()
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if not block.takes(frame):  # a stream whose rate, channels or sample format changes
                        yield block.rate, block.mono()
                        block = _Block()
                    block.add(frame)
                    seconds += frame.samples / frame.sample_rate
                    if block.size >= BLOCK_FRAMES:
                        yield block.rate, block.mono()
                        block = _Block()
        except av.error.FFmpegError as exc:
            if seconds == 0.0:
                raise AudioLoadError(name, _corrupt(exc)) from exc
            reason = _detail(exc) or "corrupt or truncated audio"
        if block.size:
            yield block.rate, block.mono()
        if seconds == 0.0:
            raise AudioLoadError(name, "no samples")
        return Truncation.check(seconds, declared, reason)


class _Block:
    """Decoded frames of one rate, channel count and sample format, mixed to mono together (one numpy pass for
    ~a hundred AAC frames instead of one each)."""

    def __init__(self) -> None:
        self.parts: list[NDArray[np.generic]] = []  # channels × samples each
        self.size = 0
        self.rate = 0
        self.kind = ""
        self.channels = 0

    def takes(self, frame: av.AudioFrame) -> bool:
        return not self.parts or (frame.sample_rate, _kind(frame), len(frame.layout.channels)) == (
            self.rate,
            self.kind,
            self.channels,
        )

    def add(self, frame: av.AudioFrame) -> None:
        self.rate, self.kind, self.channels = frame.sample_rate, _kind(frame), len(frame.layout.channels)
        data = frame.to_ndarray()  # planar: channels × samples; packed: 1 × (samples · channels)
        self.parts.append(data if frame.format.is_planar else data.reshape(-1, self.channels).T)
        self.size += frame.samples

    def mono(self) -> NDArray[np.float32]:
        """The frames' samples in [-1, 1], channels averaged; (samples,)."""
        data = np.concatenate(self.parts, axis=1).astype(np.float32)
        if self.kind == "u8":
            data -= np.float32(128.0)
        scale = _SCALES[self.kind]
        mono = data[0] if self.channels == 1 else data.mean(axis=0, dtype=np.float32)
        if scale != 1.0:
            mono = mono * np.float32(scale)
        return np.ascontiguousarray(mono, dtype=np.float32)


def _kind(frame: av.AudioFrame) -> str:
    """The frame's sample format without its planar mark (``fltp`` -> ``flt``)."""
    name = frame.format.name
    kind = name.removesuffix("p") if frame.format.is_planar else name
    if kind not in _SCALES:
        raise ValueError(f"unexpected sample format {name}")  # FFmpeg has no other
    return kind


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """The audio track's length as the container declares it, where it declares one exactly (module docstring)."""
    formats = set(container.format.name.split(","))
    if not formats & _DECLARING_CONTAINERS:
        return None
    if stream.duration is not None and stream.time_base is not None and formats & {"mov", "flac"}:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")
    if tag:
        return _clock_seconds(tag)
    if "matroska" in formats and len(container.streams) == 1 and container.duration is not None:
        return container.duration / av.time_base
    return None


def _clock_seconds(text: str) -> float | None:
    """Matroska's ``HH:MM:SS.nnnnnnnnn`` as seconds; None where it is something else."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _open_reason(exc: av.error.FFmpegError, head: bytes) -> str:
    """Why FFmpeg could not open a file that starts with ``head``: a known container that it cannot read is
    corrupt or cut short (an MP4 written without its final index, a Matroska file cut in its header); anything
    else is not audio."""
    if head[4:8] == b"ftyp":
        return "corrupt or truncated audio (an MP4/M4A file without its index: cut short before it was finished?)"
    if head[:4] == _EBML:
        return "corrupt or truncated audio (a Matroska/WebM file FFmpeg cannot read)"
    if isinstance(exc, av.error.InvalidDataError):
        return NOT_AUDIO
    return _corrupt(exc)


def _corrupt(exc: av.error.FFmpegError) -> str:
    detail = _detail(exc)
    return f"corrupt or truncated audio ({detail})" if detail else "corrupt or truncated audio"


def _detail(exc: av.error.FFmpegError) -> str:
    """FFmpeg's message without the errno and the file name that PyAV adds."""
    text = str(getattr(exc, "strerror", "") or exc).strip()
    return text.splitlines()[0].rstrip(".") if text else ""
