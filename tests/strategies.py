"""Hypothesis strategies: finite float64 arrays (shapes up to 24 × 24) and decoded chunks with arbitrary attention."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from onepass_whisper.domain.audio import SAMPLE_RATE, ChunkSegment, DecodedChunk, Window

MAX_SIDE = 24
BOUND = 1e6  # keeps sums along a path exact enough to compare with an oracle's
SAMPLES_PER_FRAME = 320  # 20 ms at 16 kHz

# Words as a tokenizer spells them, punctuation that whisper merges included.
WORD_TEXTS = (" hello", " world", "'s", ",", ".", "!", "?", ")", '"', " (", ' "', " -", " ", " ¿", "。")


def finite_floats(bound: float = BOUND) -> st.SearchStrategy[float]:
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False)


def cost_matrices(max_side: int = MAX_SIDE) -> st.SearchStrategy[NDArray[np.float64]]:
    """Finite float64 matrices of 1..max_side rows and columns."""
    shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side)
    return hnp.arrays(np.float64, shapes, elements=finite_floats())


def signals(max_dims: int = 3) -> st.SearchStrategy[NDArray[np.float64]]:
    """Finite float64 arrays of 1..max_dims dimensions: up to 24 along the last axis, up to 3 along the others."""
    shapes = st.tuples(
        hnp.array_shapes(min_dims=0, max_dims=max_dims - 1, min_side=1, max_side=3),
        st.integers(1, MAX_SIDE),
    ).map(lambda parts: (*parts[0], parts[1]))
    return hnp.arrays(np.float64, shapes, elements=finite_floats())


def odd_widths(max_width: int = 2 * MAX_SIDE + 1) -> st.SearchStrategy[int]:
    """Odd filter widths, some longer than any signal."""
    return st.integers(0, max_width // 2).map(lambda half: 2 * half + 1)


def _samples(seed: int, count: int) -> NDArray[np.float32]:
    """Quiet background noise with loud 100-ms blocks switched on at random: pauses of varied lengths."""
    rng = np.random.default_rng(seed)
    blocks = rng.random(-(-count // 1600)) < 0.6  # (100-ms blocks,)
    envelope = np.repeat(blocks, 1600)[:count] * rng.uniform(0.01, 0.5)
    return (rng.normal(size=count) * (envelope + 1e-3)).astype(np.float32)


@st.composite
def chunk_segments(draw: st.DrawFn, duration: float) -> ChunkSegment:
    texts = draw(st.lists(st.sampled_from(WORD_TEXTS), max_size=5))
    counts = draw(st.lists(st.integers(1, 3), min_size=len(texts), max_size=len(texts)))
    start, end = sorted(draw(st.lists(st.floats(0.0, duration), min_size=2, max_size=2)))
    return ChunkSegment(start, end, "".join(texts), tuple(texts), tuple(counts))


@st.composite
def decoded_chunks(draw: st.DrawFn, extreme: bool = False, max_frames: int = 40) -> DecodedChunk:
    """Chunks of 0..max_frames frames with arbitrary finite attention (``extreme``: float32's whole range, ±inf)."""
    frames = draw(st.integers(0, max_frames))
    count = max(0, frames * SAMPLES_PER_FRAME - draw(st.integers(0, SAMPLES_PER_FRAME - 1)))
    window = Window(source=0, index=0, offset=0.0, samples=_samples(draw(st.integers(0, 2**32 - 1)), count))
    drawn = draw(st.lists(chunk_segments(count / SAMPLE_RATE), max_size=3))
    tokens = sum(sum(s.word_token_counts) for s in drawn)
    heads = draw(st.integers(1, 3))
    if extreme:
        elements = st.floats(width=32, allow_nan=False)
    else:
        elements = st.floats(-30.0, 30.0, width=32)
    attention = draw(hnp.arrays(np.float32, (heads, tokens + 1, frames), elements=elements))
    probabilities = draw(hnp.arrays(np.float32, (tokens,), elements=st.floats(0.0, 1.0, width=32)))
    return DecodedChunk(
        window=window,
        language="en",
        segments=drawn,
        token_probabilities=probabilities,
        attention=attention,
    )
