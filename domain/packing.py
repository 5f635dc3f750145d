"""Short requests packed into one 30-second window, and their words split back by time.

On a CPU a short request costs mostly its own encoder pass over a full 30-s window (whisper pads every window to
30 s): a server answering many 3-s requests spends most of its time encoding silence. Packed, several requests
share that pass and their tokens share the decoder's steps. What packing must never do is hand one request's words
to another, so the split is by construction, not by trust in the model:

- the parts are laid out one after another with ``gap`` seconds of digital silence between them; each part *claims*
  its own audio and half of each gap beside it, so the claims tile the window without overlap;
- a segment goes to the part whose claim holds the whole segment (its timestamps and every word's times); a segment
  that reaches into two claims, or lies outside every claim, makes the whole pack unsplittable (``split`` returns
  None) and its parts are decoded again, each alone;
- times are moved into the part's own time and kept inside its audio.

So a word that reaches a request's answer was timed inside that request's own audio or the silence beside it. A
model that decodes less than the whole pack (it stopped early) leaves parts with nothing or with speech after its
last word: ``unfinished`` names them, and they too are decoded again alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from attrs import evolve, frozen

from onepass_whisper.domain.audio import SAMPLE_RATE, WINDOW_SECONDS, Window
from onepass_whisper.domain.decoding import CONTINUE_SECONDS
from onepass_whisper.domain.model import Segment, Word
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


def split(pack: Pack, segments: Sequence[Segment]) -> list[list[Segment]] | None:
    """``segments`` (timed in the pack, which starts at 0) as each part's, in the part's own time; None when a
    segment or a word reaches into two parts' claims or lies outside every claim: then nothing is handed out."""
    claims = [pack.claim(i) for i in range(len(pack.parts))]
    owned: list[list[Segment]] = [[] for _ in pack.parts]
    for segment in segments:
        times = [segment.start, segment.end, *(t for word in segment.words for t in (word.start, word.end))]
        owner = next((i for i, (lo, hi) in enumerate(claims) if lo <= min(times) and max(times) <= hi), None)
        if owner is None:
            return None
        owned[owner].append(_moved(segment, pack.parts[owner]))
    return owned


def unfinished(pack: Pack, owned: Sequence[Sequence[Segment]]) -> list[int]:
    """The parts the model did not finish: none of their speech decoded, or more than ``CONTINUE_SECONDS`` of
    sound after their last word (their segments are then dropped and the part decoded alone)."""
    left = []
    for index, (part, segments) in enumerate(zip(pack.parts, owned)):
        heard = sound_end(part.window.samples)
        ends = [segment.end for segment in segments]  # in the part's own time (file time of its request)
        said = max(ends) - part.window.offset if ends else 0.0
        if heard - said > CONTINUE_SECONDS:
            left.append(index)
    return left


def _moved(segment: Segment, part: Part) -> Segment:
    """``segment`` from pack time into the time of ``part``'s request, kept inside the part's audio."""
    shift = part.window.offset - part.start
    low, high = part.window.offset, part.window.end

    def moved(seconds: float) -> float:
        return min(max(seconds + shift, low), high)

    words = tuple(_moved_word(word, moved(word.start), moved(word.end)) for word in segment.words)
    start = moved(segment.start)
    return evolve(segment, start=start, end=max(moved(segment.end), start), words=words)


def _moved_word(word: Word, start: float, end: float) -> Word:
    return evolve(word, start=start, end=max(end, start))
