"""``benchmarks.lag_sweep.hypotheses``: recorded windows become each file's hypothesis in file time and time order,
so the sweep scores what ``app eval`` scores."""

from __future__ import annotations

import numpy as np

from benchmarks.lag_sweep import hypotheses
from onepass_whisper.application.evaluation import Reference, TimedWord
from onepass_whisper.domain.audio import Window
from onepass_whisper.domain.model import TranscribeOptions
from tests.fakes import FakeAligner, FakeDecoder

RATE = 16_000


def window(source: int, index: int, offset: float, seconds: float) -> Window:
    samples = np.full(round(seconds * RATE), 0.3, np.float32)
    return Window(source=source, index=index, offset=offset, samples=samples)


def test_windows_come_back_per_reference_in_file_time_and_order() -> None:
    decoder = FakeDecoder("un deux")  # one segment over each window, its words spread evenly by FakeAligner
    options = TranscribeOptions()
    chunks = [
        decoder.decode_batch([window(0, 1, 2.0, 2.0)], options)[0],  # the second window of file 0 comes first
        decoder.decode_batch([window(1, 0, 0.0, 1.0)], options)[0],
        decoder.decode_batch([window(0, 0, 0.0, 2.0)], options)[0],
    ]
    refs = [Reference("a", "g", "un deux un deux", ()), Reference("b", "g", "un deux", ())]

    result = hypotheses(chunks, refs, FakeAligner())

    assert set(result) == {"a", "b"}
    assert result["a"].words == (
        TimedWord(" un", 0.0, 1.0),
        TimedWord(" deux", 1.0, 2.0),
        TimedWord(" un", 2.0, 3.0),
        TimedWord(" deux", 3.0, 4.0),
    )
    assert result["a"].segments == ((0.0, 2.0), (2.0, 4.0))
    assert result["b"].words == (TimedWord(" un", 0.0, 0.5), TimedWord(" deux", 0.5, 1.0))
    assert result["a"].text.split() == ["un", "deux", "un", "deux"]
