"""Short requests packed into one 30-second window, and their words split back by time.

On a CPU a short request costs mostly its own encoder pass over a full 30-s window (whisper pads every window to
30 s): a server answering many 3-s requests spends most of its time encoding silence. Packed, several requests
share that pass and their tokens share the decoder's steps. What packing must never do is hand one request's words
to another, so the split is by construction, not by trust in the model:

- the parts are laid out one after another with ``gap`` seconds of digital silence between them; each part *claims*
  its own audio and half of each gap beside it, so the claims tile the window without overlap;
- a decoded segment goes to the part whose claim holds its middle; a segment whose timestamps reach into the audio
  of another part (not only into the silence between them: whisper's segment timestamps are often a second
  early or late there) makes the whole pack unsplittable (``split_chunk`` returns None), and its parts are
  decoded again, each alone;
- each part becomes a decoded chunk of its own window: its segments in its own time, its tokens' probabilities and
  attention rows, and of each row only the columns of the part's own audio. Its words are then timed as any
  window's are: the aligner's softmax, z-score and DTW see nothing of the other parts, so a word can only be
  placed in its own request's audio (and it is timed as well as a window of its own would be).

A model that decodes less than the whole pack (it stopped early) leaves parts with nothing or with speech after
their last segment: ``unfinished`` names them, and they too are decoded again alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from attrs import evolve, frozen

from onepass_whisper.domain.audio import SAMPLE_RATE, WINDOW_SECONDS, ChunkSegment, DecodedChunk, Window
from onepass_whisper.domain.decoding import CONTINUE_SECONDS
from onepass_whisper.domain.windowing import sound_end

# heuristic: long enough that a segment's timestamps (whisper's, 20-ms steps, often a few hundred ms after the
# speech) and DTW's word edges fall inside the gap's own half, short enough to leave room for speech
PACK_GAP_SECONDS = 2.0


@frozen(eq=False)
class Part:
    """One request's whole audio (its only window) inside a pack, from ``start`` seconds of the pack."""

    window: Window  # the request's own window: ``source`` is the request
    start: float

    @property
    def end(self) -> float:
        return self.start + self.window.duration


@frozen(eq=False)
class Pack:
    """Windows of several requests laid out in one window, ``gap`` seconds of silence apart."""

    window: Window
    parts: tuple[Part, ...]
    gap: float = PACK_GAP_SECONDS

    def claim(self, index: int) -> tuple[float, float]:
        """The span of the pack whose words belong to part ``index``: its audio and half of each gap beside it
        (the first and last parts reach the pack's edges). Adjacent claims meet; none overlap."""
        part = self.parts[index]
        start = 0.0 if index == 0 else part.start - self.gap / 2
        end = self.window.duration if index == len(self.parts) - 1 else part.end + self.gap / 2
        return start, end


def fits(durations: Sequence[float], duration: float, gap: float = PACK_GAP_SECONDS) -> bool:
    """Whether a part of ``duration`` seconds still fits beside parts of ``durations`` in one 30-s window."""
    return sum(durations) + duration + gap * len(durations) <= WINDOW_SECONDS


def packable(window: Window, max_seconds: float) -> bool:
    """Whether ``window`` may share a pack: a request's whole audio (its first window, from its start), at most
    ``max_seconds`` long, with sound in it (a silent request decodes alone: the no-speech rule needs a window of
    its own, see ``split``)."""
    return (
        window.index == 0
        and window.first_sample == 0
        and window.duration <= min(max_seconds, WINDOW_SECONDS)
        and sound_end(window.samples) > 0.0
    )


def pack(windows: Sequence[Window], source: int, gap: float = PACK_GAP_SECONDS) -> Pack:
    """``windows`` (which ``fits`` one after another) as one window of source ``source``, ``gap`` seconds apart."""
    if not windows or not fits([w.duration for w in windows[:-1]], windows[-1].duration, gap):
        raise ValueError(f"{len(windows)} windows do not fit one pack")  # a bug: the caller checks ``fits``
    silence = np.zeros(round(gap * SAMPLE_RATE), np.float32)
    pieces: list[np.ndarray] = []
    parts = []
    for window in windows:
        if pieces:
            pieces.append(silence)
        parts.append(Part(window, sum(len(p) for p in pieces) / SAMPLE_RATE))
        pieces.append(window.samples)
    samples = np.concatenate(pieces)
    return Pack(Window(source=source, index=0, offset=0.0, samples=samples), tuple(parts), gap)


def split_chunk(pack: Pack, chunk: DecodedChunk) -> list[DecodedChunk] | None:
    """``chunk`` (the pack's, decoded) as one chunk per part, of the part's own window: the segments in the part's
    claim that touch no other part's audio, moved into its time; their tokens' probabilities; their attention rows
    (and the row after their last token, which ends the last word) with only the part's own frames. None when a
    segment reaches into two claims or outside every claim: then nothing is handed out."""
    claims = [pack.claim(i) for i in range(len(pack.parts))]
    owned: list[list[tuple[ChunkSegment, int, int]]] = [[] for _ in pack.parts]  # (segment, first token, tokens)
    first = 0
    for segment in chunk.segments:
        tokens = sum(segment.word_token_counts)
        middle = (segment.start + segment.end) / 2
        owner = next((i for i, (lo, hi) in enumerate(claims) if lo <= middle <= hi), None)
        if owner is None or _reaches_another(pack, owner, segment):
            return None  # outside the window, or into another request's audio: its words may be that request's
        if any(owned[later] for later in range(owner + 1, len(owned))):
            return None  # back in time: a part's tokens would not be one run of rows
        owned[owner].append((segment, first, tokens))
        first += tokens
    return [_part_chunk(chunk, part, mine) for part, mine in zip(pack.parts, owned)]


def _reaches_another(pack: Pack, owner: int, segment: ChunkSegment) -> bool:
    """Whether ``segment`` overlaps the audio of a part other than ``owner`` (the gaps' silence is no one's)."""
    return any(segment.start < part.end and part.start < segment.end for i, part in enumerate(pack.parts) if i != owner)


def _part_chunk(chunk: DecodedChunk, part: Part, owned: Sequence[tuple[ChunkSegment, int, int]]) -> DecodedChunk:
    frames = part.window.num_frames
    column = min(round(part.start / chunk.frame_seconds), chunk.attention.shape[-1] - frames)
    lo = owned[0][1] if owned else 0
    hi = owned[-1][1] + owned[-1][2] if owned else 0
    # the rows of its tokens and the one after (the next part's first token, or end-of-text): a word ends where
    # the next token starts, as in a window of its own; none when the part has no tokens but end-of-text's
    rows = np.arange(lo, hi + 1) if owned else np.array([chunk.attention.shape[1] - 1])
    attention = chunk.attention[:, rows, column : column + frames]
    duration = part.window.duration

    def moved(seconds: float) -> float:
        return min(max(seconds - part.start, 0.0), duration)

    segments = tuple(
        evolve(segment, start=moved(segment.start), end=max(moved(segment.end), moved(segment.start)))
        for segment, _, _ in owned
    )
    return evolve(
        chunk,
        window=part.window,
        segments=segments,
        token_probabilities=np.ascontiguousarray(chunk.token_probabilities[lo:hi]),
        attention=np.ascontiguousarray(attention),
        speech_ended=False,
        token_frames=None,  # a DTW over the whole pack (the device's) crossed parts: each part's is its own
        char_rows=None,  # spelled for the whole pack: not split with it
    )


def unfinished(pack: Pack, chunks: Sequence[DecodedChunk]) -> list[int]:
    """The parts the model did not finish: none of their speech decoded, or more than ``CONTINUE_SECONDS`` of
    sound after their last segment (their chunk is then dropped and the part decoded alone)."""
    left = []
    for index, (part, chunk) in enumerate(zip(pack.parts, chunks)):
        said = max((segment.end for segment in chunk.segments), default=0.0)  # in the part's own time
        if sound_end(part.window.samples) - said > CONTINUE_SECONDS:
            left.append(index)
    return left
