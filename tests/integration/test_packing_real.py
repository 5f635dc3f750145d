"""Packed requests on the real tiny.en: three pieces of the sample, each a request, decoded in one shared window,
and each answer holds its own piece's words and none of another's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onepass_whisper.adapters.audio_file import FileAudioSource
from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.domain.audio import SAMPLE_RATE, Waveform
from onepass_whisper.domain.model import TranscribeOptions, Transcript

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.wav"
OPTIONS = TranscribeOptions(language="en")


def words(transcript: Transcript) -> list[str]:
    return [w.text.strip(" .,!?").lower() for w in transcript.words]


def pieces(scheduler: BatchScheduler) -> list[Waveform]:
    """The sample cut in three at its two longest pauses between words (found by decoding it alone)."""
    samples = np.concatenate(list(FileAudioSource().stream(SAMPLE)))
    whole = scheduler.submit(Waveform(samples), OPTIONS).future.result(120)
    timed = whole.words
    gaps = sorted(range(1, len(timed)), key=lambda i: timed[i].start - timed[i - 1].end)[-2:]
    cuts = sorted(round((timed[i - 1].end + timed[i].start) / 2 * SAMPLE_RATE) for i in gaps)
    return [Waveform(part) for part in np.split(samples, cuts)]


def test_each_packed_answer_holds_its_own_words_and_no_others(tiny_en_folder: Path) -> None:
    from onepass_whisper.adapters.mlx import load_decoder

    def decoder() -> object:
        return load_decoder(tiny_en_folder, "tiny.en")

    def scheduler(pack_seconds: float) -> BatchScheduler:
        return BatchScheduler(decoder, DtwAligner(), batch_size=4, gather_seconds=0.5, pack_seconds=pack_seconds)  # type: ignore[arg-type]

    with scheduler(0.0) as alone:
        parts = pieces(alone)
        own = [words(alone.submit(p, OPTIONS).future.result(120)) for p in parts]
    assert all(own) and all(p.duration <= 10.0 for p in parts), [p.duration for p in parts]
    with scheduler(10.0) as packing:
        tickets = [packing.submit(p, OPTIONS) for p in parts]
        packed = [words(t.future.result(120)) for t in tickets]
        decoded = packing.stats().decoded_windows
    assert decoded == 1, decoded  # the three requests in one window
    for i, answer in enumerate(packed):
        others = {w for j, ws in enumerate(own) if j != i for w in ws} - set(own[i])
        assert not set(answer) & others, (i, answer, own)
        assert len(set(answer) & set(own[i])) >= 0.8 * len(set(own[i])), (i, answer, own[i])
