"""The ports: what the application needs from the outside world, spoken in domain types."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions, Word

ProgressSink = Callable[[int, int], None]  # (windows done, windows total)


class AudioSource(Protocol):
    def stream(self, path: Path) -> Iterator[NDArray[np.float32]]:
        """``path``'s samples as consecutive blocks of 16 kHz mono float32, read as they are asked for.

        Raises ``AudioLoadError`` when the file cannot be opened or read, possibly after some blocks.
        """
        ...


class Decoder(Protocol):
    @property
    def name(self) -> str:
        """The model's name, as given by the user."""
        ...

    @property
    def is_multilingual(self) -> bool: ...

    def decode_batch(self, windows: Sequence[Window], options: TranscribeOptions) -> list[DecodedChunk]:
        """Decode ``windows`` together; one chunk per window, in order."""
        ...


class Aligner(Protocol):
    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        """Time the words of each of ``chunk``'s segments, in seconds from the window's start."""
        ...


class ModelSource(Protocol):
    def resolve(self, name: str) -> Path:
        """A local folder in mlx-whisper layout (config.json + weights) for ``name``; ``ModelLoadError`` if none."""
        ...
