"""Audio and video files that libsndfile cannot read, written here with PyAV (FFmpeg's encoders in its wheels),
so that no binary file is committed: an iPhone-style voice memo (AAC in M4A), videos with sound (MP4, MOV, MKV,
WebM), a browser recording (Opus in WebM), a video without sound, and files cut short."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import av
import numpy as np
import soxr
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream
from numpy.typing import NDArray

FRAME_SIZE: Final = {"aac": 1024, "libopus": 960, "alac": 4096}  # samples per encoder frame
VIDEO_FPS: Final = 10

# name: (container format, audio codec, sample rate, channels, video codec or None)
KINDS: Final[dict[str, tuple[str, str, int, int, str | None]]] = {
    "memo.m4a": ("ipod", "aac", 44_100, 1, None),  # an iPhone voice memo
    "lossless.m4a": ("ipod", "alac", 44_100, 2, None),
    "clip.mp4": ("mp4", "aac", 48_000, 2, "libx264"),
    "clip.mov": ("mov", "aac", 48_000, 2, "mpeg4"),
    "clip.mkv": ("matroska", "libopus", 48_000, 2, "mpeg4"),
    "clip.webm": ("webm", "libopus", 48_000, 2, "libvpx"),
    "voice.webm": ("webm", "libopus", 48_000, 1, None),  # a browser's MediaRecorder
}


def encode(
    path: Path,
    samples: NDArray[np.floating],
    rate: int,
    *,
    fmt: str,
    codec: str,
    channels: int = 1,
    video: str | None = None,
    faststart: bool = False,
) -> Path:
    """``samples`` (mono, ``rate`` Hz) encoded with ``codec`` into ``path``;
    every channel the same; a small changing picture beside it with ``video``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as container:
        pictures = None if video is None else _picture_stream(container, video)
        sound = container.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")
        assert isinstance(sound, AudioStream)
        formats = sound.codec_context.codec.audio_formats
        assert formats
        sample_format = formats[0]
        step = FRAME_SIZE.get(codec, 1024)
        shown = 0
        for start in range(0, len(samples), step):
            block = np.repeat(np.asarray(samples[start : start + step], np.float32)[None, :], channels, axis=0)
            data = block if sample_format.is_planar else block.T.reshape(1, -1)
            if sample_format.name.startswith("s16"):
                data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
            elif sample_format.name.startswith("s32"):
                data = (np.clip(data, -1, 1) * (2**31 - 1)).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format=sample_format.name, layout=sound.layout.name
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(sound.encode(frame))
            while pictures is not None and shown < (start + step) * VIDEO_FPS / rate:
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), shown * 7 % 256, np.uint8), format="rgb24")
                picture.pts = shown
                shown += 1
                container.mux(pictures.encode(picture))
        container.mux(sound.encode(None))
        if pictures is not None:
            container.mux(pictures.encode(None))
    return path


def kind(path: Path, samples: NDArray[np.floating], rate: int, name: str) -> Path:
    """``samples`` (``rate`` Hz) as one of ``KINDS``, at its rate, written to ``path``."""
    fmt, codec, kind_rate, channels, video = KINDS[name]
    if kind_rate != rate:
        samples = soxr.resample(np.asarray(samples, np.float32), rate, kind_rate)
    return encode(path, samples, kind_rate, fmt=fmt, codec=codec, channels=channels, video=video)


def silent_video(path: Path, seconds: float = 1.0) -> Path:
    """An MP4 with a picture and no sound."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        pictures = _picture_stream(container, "mpeg4")
        for number in range(round(seconds * VIDEO_FPS)):
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), number * 9 % 256, np.uint8), format="rgb24")
            picture.pts = number
            container.mux(pictures.encode(picture))
        container.mux(pictures.encode(None))
    return path


def _picture_stream(container: OutputContainer, codec: str) -> VideoStream:
    pictures = container.add_stream(codec, rate=VIDEO_FPS)
    assert isinstance(pictures, VideoStream)
    pictures.width, pictures.height, pictures.pix_fmt = 64, 48, "yuv420p"
    return pictures


def cut(path: Path, share: float, into: Path | None = None) -> Path:
    """The first ``share`` of ``path``'s bytes, as an interrupted copy leaves them (over ``path`` itself, or in
    ``into``)."""
    data = path.read_bytes()
    target = path if into is None else into
    target.write_bytes(data[: int(len(data) * share)])
    return target
