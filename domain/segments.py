"""Segments that span time: no segment of zero (or negative) length reaches a transcript.

Where they came from: a window's timestamp tokens past its real audio (a sampled attempt's timestamps run on to
30 s in an 8-second window) are clamped to the window's end, and a segment whose closing timestamp is not after its
opening one is clamped to its start; the aligner then puts every word of such a segment at that one instant (the
words of a segment keep to its timestamps, and word times never go backwards). Written as they were, such segments
became cues that start where they end (``00:00:08,250 --> 00:00:08,250``), which players skip or reject.

The text is kept (it was decoded, and dropping words silently is worse than a coarse time): a segment shorter than
``MIN_SEGMENT_SECONDS`` joins its neighbour in the same window, the previous one, else the next; a window whose
every segment sits at one instant keeps them as one segment of ``MIN_SEGMENT_SECONDS`` (all of a window shorter than
that, less than a word: the one case left where a segment may print as shorter than a millisecond). Words the aligner stacked on
one instant are spread evenly over the room before the next word (or the segment's end), where there is room. A
segment whose every word still sits at one instant (the next segment's words stacked there too: no room before
them) would print as a word cue that starts where it ends: its words and every word stacked at that instant beside
them share the time up to the end of the last of them (or the next word, or the window's end).
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import evolve

from onepass_whisper.domain.model import Segment

# a timestamp token's step (20 ms): the shortest time the model can say a segment lasts; more than the millisecond
# that srt, vtt and the JSON round to, so a segment this long never prints as zero
MIN_SEGMENT_SECONDS = 0.02


def spanning(segments: Sequence[Segment], start: float, end: float) -> list[Segment]:
    """``segments`` (of one window lying in [``start``, ``end``], in order) with none shorter than
    ``MIN_SEGMENT_SECONDS``: short ones merged into a neighbour, a lone one widened inside the window (to all of
    a window shorter than that: times never leave the audio)."""
    kept: list[Segment] = []
    repaired: set[int] = set()  # positions in ``kept`` of segments that took in a short one: their words spread
    waiting: list[Segment] = []  # short segments before the first long one: they join it
    for segment in segments:
        if segment.duration >= MIN_SEGMENT_SECONDS:
            if waiting:
                repaired.add(len(kept))
            kept.append(_join([*waiting, segment]) if waiting else segment)
            waiting = []
        elif kept:
            repaired.add(len(kept) - 1)
            kept[-1] = _join([kept[-1], segment])
        else:
            waiting.append(segment)
    if waiting:  # nothing in the window spans time
        repaired.add(len(kept))
        kept.append(_widen(_join(waiting), start, end))
    spanned: list[Segment] = []
    floor = start  # the end of the window's last word so far: spread words never go back past it
    for i, segment in enumerate(kept):
        if i in repaired:  # nor forward past the window's next word (segments without words may lie anywhere)
            later = [s.words[0].start for s in kept[i + 1 :] if s.words]
            segment = _spread(segment, floor, later[0] if later else max(end, segment.end))
        if segment.words:
            floor = segment.words[-1].end
        spanned.append(segment)
    return _unstacked(spanned, start, end)


def _unstacked(segments: list[Segment], start: float, end: float) -> list[Segment]:
    """``segments`` where none has all its words at one instant: each such segment's words, with the words stacked
    at that instant before and after them (in other segments too), spread evenly from the instant to the last of
    their ends, or where that is the instant, to the next word's start (the window's ``end`` after the last word),
    or where that leaves no room, from the previous word's end (``start`` before the first word)."""
    words = [w for s in segments for w in s.words]
    firsts = [0]  # where each segment's words begin in ``words``
    for segment in segments:
        firsts.append(firsts[-1] + len(segment.words))
    for n, segment in enumerate(segments):
        first, count = firsts[n], len(segment.words)
        at = segment.words[0].start if count else 0.0
        if count and segment.words[-1].end == at:  # all of it at one instant
            lo = first
            while lo > 0 and words[lo - 1].start == at:
                lo -= 1
            hi = first + count
            while hi < len(words) and words[hi].start == at:
                hi += 1
            base, limit = at, max(w.end for w in words[lo:hi])
            if limit <= base:
                limit = words[hi].start if hi < len(words) else max(end, at)
            if limit <= base:
                base, limit = (words[lo - 1].end if lo else min(start, at)), at
            if limit > base:
                edges = [base + (limit - base) * k / (hi - lo) for k in range(hi - lo + 1)]
                for k in range(lo, hi):
                    words[k] = evolve(words[k], start=edges[k - lo], end=edges[k - lo + 1])
    result = []
    for n, segment in enumerate(segments):
        own = tuple(words[firsts[n] : firsts[n + 1]])
        if own == segment.words:
            result.append(segment)
        else:
            begins, ends = min(segment.start, own[0].start), max(segment.end, own[-1].end)
            result.append(evolve(segment, start=begins, end=ends, words=own))
    return result


def _join(parts: Sequence[Segment]) -> Segment:
    """One segment of ``parts`` (consecutive, in order): their text and words, from the first start to the last
    end; the decoding statistics are the window's, the same in every part."""
    first = parts[0]
    return evolve(
        first,
        start=min(p.start for p in parts),
        end=max(p.end for p in parts),
        text="".join(p.text for p in parts),
        words=tuple(w for p in parts for w in p.words),
    )


def _widen(segment: Segment, lower: float, upper: float) -> Segment:
    """``segment`` made ``MIN_SEGMENT_SECONDS`` long around where it is, inside [lower, upper] where that fits."""
    end = min(max(segment.end, segment.start + MIN_SEGMENT_SECONDS), upper)
    start = max(min(segment.start, end - MIN_SEGMENT_SECONDS), lower)  # a window shorter than that: all of it
    return evolve(segment, start=start, end=end)


def _spread(segment: Segment, floor: float, ceiling: float) -> Segment:
    """``segment`` (one that took in a short one) with each run of words stacked on one instant spread evenly up
    to the next word's start (the segment's end for the last run, not past ``ceiling``, the window's next word),
    or where that leaves no room, back from the instant to the previous word's end (the segment's start for the
    first run, not before ``floor``, the window's previous word)."""
    words = list(segment.words)
    if not words:
        return segment
    index = 0
    while index < len(words):
        run = index
        instant = words[index].start
        while run < len(words) and words[run].start == words[run].end == instant:
            run += 1
        if run > index:
            limit = words[run].start if run < len(words) else min(max(segment.end, instant), ceiling)
            base = instant
            if limit <= base:  # no room after them: the room before, back to the previous word (or the start)
                base = words[index - 1].end if index else max(floor, min(segment.start, instant))
                limit = instant
            if limit > base:
                edges = [base + (limit - base) * k / (run - index) for k in range(run - index)] + [limit]
                for k, position in enumerate(range(index, run)):
                    words[position] = evolve(words[position], start=edges[k], end=edges[k + 1])
        index = max(run, index + 1)
    start = min(segment.start, words[0].start)
    end = max(segment.end, words[-1].end)
    return evolve(segment, start=start, end=end, words=tuple(words))
