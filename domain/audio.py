"""Array carriers: decoded audio, the 30-second windows cut from it, and what the decoder returns per window."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

SAMPLE_RATE = 16_000  # Hz, what every Whisper model hears
WINDOW_SECONDS = 30.0  # the encoder's fixed input length
FRAME_SECONDS = 0.02  # one encoder output frame (cross-attention column) = 20 ms
HOP_SECONDS = 0.01  # one mel frame = 10 ms
# heuristic: a file holding this much less audio than its header declares is cut short; less is codec framing
# (AAC priming and padding, Opus pre-skip, a Matroska duration rounded to the millisecond: measured within 10 ms)
# and resampling, and would be less than a word anyway
TRUNCATION_TOLERANCE_SECONDS = 0.1


def finite_samples(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """``samples`` with NaN and infinite values made silence (they carry no sound; the model would see garbage)."""
    if np.isfinite(samples).all():
        return samples
    return np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)


def _float32(samples: NDArray[np.floating]) -> NDArray[np.float32]:
    return np.ascontiguousarray(samples, dtype=np.float32)


@frozen
class Truncation:
    """An input cut short (a copy interrupted, a recorder that crashed): it holds less audio than its header
    declares, or its data breaks off. What is there is transcribed; this says what is missing."""

    duration: float  # seconds of audio read
    expected_duration: float | None  # seconds the header declares; None where the data broke off without one
    reason: str = ""  # why reading stopped early, where the data broke off (a decoder's message)

    @classmethod
    def check(cls, duration: float, expected_duration: float | None, reason: str = "") -> Truncation | None:
        """A ``Truncation`` where ``duration`` falls short of ``expected_duration`` by more than
        ``TRUNCATION_TOLERANCE_SECONDS``, or where the data broke off (``reason``); else None."""
        if reason:
            return cls(duration, expected_duration, reason)
        if expected_duration is not None and expected_duration - duration > TRUNCATION_TOLERANCE_SECONDS:
            return cls(duration, expected_duration)
        return None

    def describe(self) -> str:
        """One line for the user: both lengths, or where and why the data broke off."""
        if self.expected_duration is not None:
            text = f"cut short: its header declares {self.expected_duration:.2f} s, it holds {self.duration:.2f} s"
        else:
            text = f"cut short: the audio breaks off at {self.duration:.2f} s"
        return f"{text} ({self.reason})" if self.reason else text


@frozen(eq=False)
class Waveform:
    """Mono float32 samples at 16 kHz of one input, and whether the input was cut short."""

    samples: NDArray[np.float32] = field(converter=_float32)  # (samples,)
    sample_rate: int = SAMPLE_RATE
    truncated: Truncation | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@frozen(eq=False)
class Window:
    """At most 30 s of one input, decoded as one sequence."""

    source: int  # which input (index in the service's list of inputs)
    index: int  # position among that input's windows
    offset: float  # seconds from the start of the input
    samples: NDArray[np.float32] = field(converter=_float32)  # (samples,), <= 30 s at 16 kHz
    # 0: cut from the input; n: the undecoded rest of a decoded window of depth n - 1 (``domain/decoding.py``)
    tail_depth: int = 0

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def first_sample(self) -> int:
        """Where the window starts, in samples of its input (its offset on the sample grid)."""
        return round(self.offset * SAMPLE_RATE)

    @property
    def end(self) -> float:
        """Where the window ends, in seconds of its input, on the sample grid: exactly the offset of a window that
        starts there (``offset + duration`` may round a few 1e-15 s past it)."""
        return (self.first_sample + len(self.samples)) / SAMPLE_RATE

    @property
    def num_frames(self) -> int:
        """Real (unpadded) length in encoder frames (20 ms each)."""
        return int(np.ceil(len(self.samples) / (SAMPLE_RATE * FRAME_SECONDS)))


@frozen
class ChunkSegment:
    """A segment of one window as the decoder found it; times relative to the window."""

    start: float
    end: float
    text: str
    words: tuple[str, ...]  # the segment's words as the tokenizer spells them
    word_token_counts: tuple[int, ...]  # tokens per word, in order


def _segments(ss: Iterable[ChunkSegment]) -> tuple[ChunkSegment, ...]:
    return tuple(ss)


def _int32(values: Iterable[int] | NDArray[np.integer]) -> NDArray[np.int32]:
    return np.asarray(values, dtype=np.int32)


@frozen(eq=False)
class CharacterRows:
    """The alignment heads' cross-attention from a second decoder pass that spelled a run of a window's words one
    character a token (``--char-timing``): the characters attend where they sound more sharply than word pieces.

    A window whose spelling does not fit the decoder's context is spelled in several runs; each covers the words
    from ``first_word`` (an index among all of the chunk's words) on, ``len(firsts)`` of them.
    """

    first_word: int
    firsts: NDArray[np.int32] = field(converter=_int32)  # per word of the run, the row of its first character
    # heads × (characters + 1) × frames, raw QK: row ``i`` is the position that predicts character token ``i``
    # (spaces between words included), the last row predicts what follows the run
    attention: NDArray[np.float32]


@frozen(eq=False)
class DecodedChunk:
    """One decoded window: text, statistics, and the alignment heads' attention captured while decoding.

    ``attention`` has one row per text token of all segments in order, plus a last row for end-of-text: row ``i``
    is the cross-attention of the step that emitted token ``i``. Columns are the window's real frames only.

    ``token_frames``, where set, is the frame at which DTW's path first reaches each of those rows, computed where
    the attention was captured (a GPU decoder aligns a whole batch on the device, ``adapters/mlx/alignment.py``);
    ``attention`` is then empty: its megabytes never cross to the host.

    ``char_rows``, where set, hold a second pass's rows with the words spelled one character a token; the aligner
    times each word's start by its first character's row.

    ``edge_logits``, where set, scores each real frame as a word edge from the encoder's output (a linear probe);
    the aligner moves the boundaries where two words meet without a pause to the best-scored frame nearby.
    """

    window: Window
    language: str
    segments: tuple[ChunkSegment, ...] = field(converter=_segments)
    token_probabilities: NDArray[np.float32]  # (text tokens,)
    attention: NDArray[np.float32]  # heads × (text tokens + 1) × frames
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    frame_seconds: float = FRAME_SECONDS
    # the output ended with a lone timestamp: the model says nothing more is spoken in this window (openai-whisper's
    # "single timestamp ending", after which it seeks to the window's end instead of decoding the rest again)
    speech_ended: bool = False
    token_frames: NDArray[np.int32] | None = None  # (text tokens + 1,), or None: the aligner computes it
    # the detector's probability of ``language`` in this window; None where the language was given (or the model
    # is English-only)
    language_probability: float | None = None
    # (real frames,) the encoder's word-edge scores (logits: a word starts or ends in the frame), where the decoder
    # has a boundary probe for its model (``adapters/mlx/edge_probe.py``); None: the aligner keeps its own edges
    edge_logits: NDArray[np.float32] | None = None
    # the character-forcing pass's rows (``CharacterRows``), where asked for (``--char-timing``); the aligner
    # then takes each word's start from its first character's row; None: from the word pieces' rows
    char_rows: tuple[CharacterRows, ...] | None = None

    @property
    def token_count(self) -> int:
        return sum(sum(s.word_token_counts) for s in self.segments)


def _float_array(values: Iterable[float] | NDArray[np.floating]) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


@frozen(eq=False)
class LagEvidence:
    """What one window says about the model's lag (``LagMeasuringAligner``): DTW's interior word starts (seconds
    from the window's start, no lag taken off) and the window's 10-ms levels in dB; empty where it says nothing.
    Where the starts come from character rows, also each one's shift from the word pieces' start of the word."""

    starts: NDArray[np.float64] = field(factory=lambda: np.zeros(0), converter=_float_array)
    levels: NDArray[np.float64] = field(factory=lambda: np.zeros(0), converter=_float_array)
    # per start, where the starts come from character rows (``DecodedChunk.char_rows``): how much later (seconds)
    # than the word pieces' DTW they place the same word; empty where the starts are the word pieces'
    shifts: NDArray[np.float64] = field(factory=lambda: np.zeros(0), converter=_float_array)

    @property
    def boundaries(self) -> int:
        return int(self.starts.size)
