"""Word timing on threads or worker processes (``WordTiming``): the same segments, errors and fallbacks either way."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest

from onepass_whisper.adapters.dtw.aligner import DtwAligner
from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.application.word_timing import WordTiming, timed_segments
from onepass_whisper.domain import errors
from onepass_whisper.domain.audio import SAMPLE_RATE, Window
from onepass_whisper.domain.errors import UnsupportedLanguageError
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from onepass_whisper.domain.ports import Aligner
from tests.fakes import FakeAligner, FakeDecoder, InMemoryAudioSource, ProcessCrashingAligner, RaisingAligner, tone

LONG = 95.0  # seconds of tone: four windows, decoded one a batch, so processes take the later ones


def transcribe(aligner: Aligner, processes: int) -> Transcript:
    service = TranscriptionService(
        InMemoryAudioSource({"a.wav": tone(LONG)}), FakeDecoder(), aligner, batch_size=1, align_processes=processes
    )
    return service.transcribe(Path("a.wav"), TranscribeOptions())


def test_processes_give_the_words_that_threads_give() -> None:
    aligner = DtwAligner()  # the real one: attention and samples cross to the workers
    on_threads, on_processes = transcribe(aligner, 0), transcribe(aligner, 2)
    assert len(on_processes.segments) == 4
    assert on_processes.segments == on_threads.segments


@pytest.mark.parametrize("error", [ValueError("attention of the wrong shape"), UnsupportedLanguageError("xx", "no")])
def test_an_error_in_a_worker_reaches_the_caller_as_from_a_thread(error: Exception) -> None:
    for processes in (0, 2):
        with pytest.raises(type(error), match=str(error)):
            transcribe(RaisingAligner(error), processes)


def test_a_window_whose_process_died_is_timed_on_a_thread() -> None:
    assert transcribe(ProcessCrashingAligner(), 2).segments == transcribe(FakeAligner(), 0).segments


def test_processes_start_with_the_second_batch_only() -> None:
    with WordTiming(FakeAligner(), threads=1, processes=2) as timing:
        timing.batch_started(4)
        assert not timing.uses_processes  # a one-batch run (a short file) never waits for processes to start
        timing.batch_started(4)
        assert timing.uses_processes


@pytest.mark.parametrize(("windows", "at_once"), [(3, False), (4, True), (16, True)])
def test_costly_aligners_take_processes_with_a_first_batch_big_enough(windows: int, at_once: bool) -> None:
    with WordTiming(FakeAligner(), threads=1, processes=2, first_batch_windows=4) as timing:
        timing.batch_started(windows)
        assert timing.uses_processes is at_once


def test_without_processes_threads_do_everything() -> None:
    with WordTiming(FakeAligner(), threads=1) as timing:
        for _ in range(3):
            timing.batch_started(4)
        assert not timing.uses_processes


@pytest.mark.parametrize(
    "error",
    [
        errors.AudioLoadError("a.wav", "truncated"),
        errors.ModelLoadError("tiny", "missing"),
        errors.UnsupportedLanguageError("xx", "no"),
        errors.InvalidOptionError("batch_size", "must be at least 1"),
        errors.OutputWriteError("out.json", "disk full"),
    ],
)
def test_domain_errors_survive_pickling(error: errors.TranscriptionError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.__dict__) == (type(error), str(error), error.__dict__)


def test_the_arrays_on_their_way_to_processes_leave_no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # the folders this run makes, not a glob of /dev/shm: other runs on the machine make and remove their own
    made: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recorded(*args: Any, **kwargs: Any) -> str:
        folder: str = mkdtemp(*args, **kwargs)
        made.append(Path(folder))
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", recorded)
    transcribe(DtwAligner(), 2)
    spills = [folder for folder in made if folder.name.startswith("onepass-align-")]
    assert spills, made  # the arrays went through files: else this test would prove nothing
    assert not [folder for folder in spills if folder.exists()]


def test_a_window_s_last_word_ends_no_later_than_the_next_window_starts() -> None:
    """27.3 + 29.85 is 57.150000000000006 in floats, and the next window starts at 914400 / 16000 = 57.15: a word
    ending a window must not end after the next window's first word starts (CI found it, hypothesis-drawn)."""
    first = Window(source=0, index=1, offset=436_800 / SAMPLE_RATE, samples=tone(29.85).samples)
    start = 436_800 + len(first.samples)
    following = Window(source=0, index=2, offset=start / SAMPLE_RATE, samples=tone(2.0).samples)
    options = TranscribeOptions()
    words = [
        word
        for window in (first, following)
        for segment in timed_segments(FakeAligner(), FakeDecoder().decode_batch([window], options)[0], True)
        for word in segment.words
    ]
    times = [t for word in words for t in (word.start, word.end)]
    assert times == sorted(times)
    assert len(first.samples) == 477_600
    assert words[1].end == first.end == following.offset == 57.15
