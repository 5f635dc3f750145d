"""``PhoneticAligner``: word edges from a forced alignment of the decoded words on the window's audio (English).

Cross-attention frames are 20 ms apart and the alignment heads attend around a word rather than at its edges: after
the lag correction and the audio refinement of ``adapters/dtw``, a third of the word starts and ends are still more
than 50 ms off (timit_dev, base: 66 / 62 % within 50 ms; ``docs/alignment.md``). A phone-level acoustic model sees
the edges themselves. This adapter wraps another ``Aligner`` (the DTW one): it takes that aligner's words,
forced-aligns the same words with pocketsphinx's US-English acoustic model (a hidden Markov model over CMUdict
pronunciations, 10-ms frames, with optional silences between words) and gives each word the aligned edges, where
they lie within ``max_shift`` of the inner aligner's: a forced alignment that went astray (a misrecognised word,
noise, music) is caught by the attention, which never drifts far. Windows in other languages, and windows whose
alignment fails, keep the inner aligner's times.

Words are looked up in pocketsphinx's CMUdict after lower-casing; a word that is not there (a name, a number) is
spoken by rule (``pronounce``), which is rough, but the alignment only needs its length to be about right. One
decoder per thread (pocketsphinx's ``Decoder`` is not thread-safe), made on first use (~0.2 s): the aligner itself
holds only settings, so it pickles into word-timing processes as the DTW aligner does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from attrs import field, frozen, validators
from numpy.typing import NDArray

from onepass_whisper.domain.audio import DecodedChunk, LagEvidence
from onepass_whisper.domain.model import Word
from onepass_whisper.domain.ports import Aligner, LagMeasuringAligner

LANGUAGE = "en"  # pocketsphinx's bundled acoustic model and dictionary are US English
FRAME_SECONDS = 0.01  # pocketsphinx's frame rate: 100 frames a second
# heuristic: how far a forced-aligned edge may lie from the attention's and still be taken. The refined DTW edges
# are within 200 ms of the truth for 99 % of words (docs/alignment.md); an edge farther than a long syllable from
# them means the alignment attached the word to other sound.
MAX_SHIFT_SECONDS = 0.3
# pocketsphinx's search beams, wider than its defaults (1e-48 for states and phones, 7e-29 for words, 1e-40 and
# 7e-29 for last phones), which lose the only path through the 12-s bundled sample: no alignment at all. At these
# widths the sample aligns, and timit_dev's and ljspeech_mfa's reference texts align as fast as with the defaults
# (0.02 s a second of audio) and no less accurately (docs/alignment.md)
SEARCH_BEAMS = {"beam": 1e-100, "pbeam": 1e-100, "wbeam": 1e-80, "lpbeam": 1e-80, "lponlybeam": 1e-80}
_NOT_WORDS = re.compile(r"[^a-z0-9']+")  # what splits a written word into dictionary words: hyphens, dots, slashes
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Letter-to-sound by rule for words CMUdict lacks: digraphs first, then one phone per letter (CMU's 39 phones)
_DIGRAPHS = {
    "ch": "CH", "sh": "SH", "th": "TH", "ph": "F", "ng": "NG", "ck": "K", "qu": "K W", "wh": "W",
    "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW", "ai": "EY", "ay": "EY", "oa": "OW", "oi": "OY", "au": "AO",
}  # fmt: skip
_LETTERS = {
    "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH", "j": "JH",
    "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R", "s": "S", "t": "T",
    "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z",
}  # fmt: skip
_local = threading.local()


def pronounce(word: str) -> str:
    """A rough CMU pronunciation of a lower-case alphabetic ``word`` by rule (for words not in the dictionary).

    A final ``e`` after a consonant is silent, doubled consonants are one sound, digraphs (``sh``, ``ee``, ...) are
    one phone, and every other letter is its commonest phone.
    """
    letters = word.replace("'", "")
    if len(letters) > 2 and letters.endswith("e") and letters[-2] not in "aeiou":
        letters = letters[:-1]
    letters = re.sub(r"([b-df-hj-np-tv-z])\1", r"\1", letters)
    phones, i = [], 0
    while i < len(letters):
        pair = letters[i : i + 2]
        if pair in _DIGRAPHS:
            phones.append(_DIGRAPHS[pair])
            i += 2
        else:
            phones.append(_LETTERS.get(letters[i], ""))
            i += 1
    return " ".join(p for p in phones if p) or "AH"


def dictionary_words(text: str) -> list[str]:
    """The dictionary words a decoded word is spoken as: lower case, split at anything but letters, digits and
    apostrophes, digits read one by one ("U.S." -> u s, "well-known" -> well known, "42" -> four two)."""
    out: list[str] = []
    for part in _NOT_WORDS.split(text.lower().replace("’", "'")):
        part = part.strip("'")
        if part.isdigit():
            out.extend(_DIGITS[int(d)] for d in part)
        elif part:
            out.append(part)
    return out


def _decoder() -> Any:
    """This thread's pocketsphinx decoder (US-English model, no language model: alignment only), its feature
    extraction reset: its noise and cepstral-mean estimates carry over from one utterance to the next, so without
    the reset a window's times would depend on which windows the thread aligned before (by a frame or so)."""
    decoder = getattr(_local, "decoder", None)
    if decoder is None:
        from pocketsphinx import Decoder

        decoder = Decoder(samprate=16000, lm=None, bestpath=False, loglevel="FATAL", **SEARCH_BEAMS)
        _local.decoder = decoder
    else:
        decoder.reinit_feat()
    return decoder


def forced_alignment(words: Sequence[str], samples: NDArray[np.float32]) -> NDArray[np.float64] | None:
    """(start, end) seconds of each of ``words`` in ``samples`` (16 kHz mono) by pocketsphinx, or ``None``.

    A word with no dictionary word (punctuation alone) is left out of the alignment and gets NaN. ``None`` where no
    word is left, or the alignment does not reach the end of the audio with every word (its search gave up).
    """
    spoken = [dictionary_words(w) for w in words]
    flat = [p for parts in spoken for p in parts]
    if not flat:
        return None
    decoder = _decoder()
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    try:
        for part in set(flat):
            if decoder.lookup_word(part) is None:
                decoder.add_word(part, pronounce(part), False)
        decoder.set_align_text(" ".join(flat))
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        segments = [s for s in decoder.seg() or () if _is_word(s.word)]  # none where the search found no path
    except RuntimeError:  # pocketsphinx raises this where it cannot add a word, build or run the search
        return None
    if len(segments) != len(flat):
        return None
    spans = np.full((len(words), 2), np.nan, dtype=np.float64)
    i = 0
    for row, parts in enumerate(spoken):
        if parts:
            first, last = segments[i], segments[i + len(parts) - 1]
            spans[row] = first.start_frame * FRAME_SECONDS, (last.end_frame + 1) * FRAME_SECONDS
            i += len(parts)
    return spans


def _is_word(token: str) -> bool:
    return not (token.startswith(("<", "[", "+")) or token == "(NULL)")


@frozen
class PhoneticAligner:
    """``inner``'s words with the edges of their forced alignment on the window's audio (implements ``Aligner``)."""

    inner: Aligner
    max_shift: float = field(default=MAX_SHIFT_SECONDS, validator=validators.gt(0.0))

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        timed = self.inner.align(chunk)
        flat = [w for words in timed for w in words]
        if chunk.language != LANGUAGE or not flat:
            return timed
        spans = forced_alignment([w.text for w in flat], chunk.window.samples)
        if spans is None:
            return timed
        inner = np.array([(w.start, w.end) for w in flat], dtype=np.float64)
        spans = spans.clip(0.0, chunk.window.duration)
        with np.errstate(invalid="ignore"):  # NaN rows (no dictionary word) compare False: kept
            near: NDArray[np.bool_] = np.all(np.abs(spans - inner) <= self.max_shift, axis=1)  # both edges or none
        times = np.where(near[:, None], spans, inner)
        starts, ends = times[:, 0], times[:, 1]
        for i in range(1, len(flat)):  # a taken edge next to a kept one must not overlap it
            starts[i] = max(starts[i], ends[i - 1])
            ends[i] = max(ends[i], starts[i])
        edges = iter(zip(starts.tolist(), ends.tolist(), strict=True))
        return tuple(tuple(Word(w.text, *next(edges), w.probability) for w in words) for words in timed)


@frozen
class PhoneticLagAligner:
    """``PhoneticAligner`` over a DTW aligner that estimates the model's lag from the speech (implements
    ``LagMeasuringAligner``): the first phase is ``inner``'s (DTW), the second the phonetic aligner over ``inner``
    with the lag, so that ``--phonetic`` gets the same lag as the default."""

    inner: LagMeasuringAligner
    max_shift: float = field(default=MAX_SHIFT_SECONDS, validator=validators.gt(0.0))

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        return PhoneticAligner(self.inner, self.max_shift).align(chunk)

    def measure(self, chunk: DecodedChunk) -> tuple[DecodedChunk, LagEvidence]:
        return self.inner.measure(chunk)

    def estimate_lag(self, evidence: Sequence[LagEvidence]) -> float | None:
        return self.inner.estimate_lag(evidence)

    def with_lag(self, lag: float) -> PhoneticAligner:
        return PhoneticAligner(self.inner.with_lag(lag), self.max_shift)
