"""``PhoneticAligner`` with the real pocketsphinx: word edges onto the speech, guarded by the inner aligner's times."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from attrs import frozen
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw import DtwAligner
from onepass_whisper.adapters.phonetic import PhoneticAligner, forced_alignment
from onepass_whisper.application.word_timing import WordTiming
from onepass_whisper.domain.audio import ChunkSegment, DecodedChunk, Window
from onepass_whisper.domain.model import Word
from tests.fakes import FakeAligner

pytest.importorskip("pocketsphinx")

REPO = Path(__file__).resolve().parents[2]
SAMPLE_SENTENCES = [s.strip() + "." for s in (REPO / "samples" / "sample.txt").read_text().split(".") if s.strip()]


@frozen
class GivenTimes:
    """An inner aligner that times the chunk's words at ``times`` (words × 2 seconds), as one segment."""

    times: tuple[tuple[float, float], ...]

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        (segment,) = chunk.segments
        return (tuple(Word(w, s, e, 0.9) for w, (s, e) in zip(segment.words, self.times, strict=True)),)


def chunk_of(samples: NDArray[np.float32], words: Sequence[str], language: str = "en") -> DecodedChunk:
    duration = len(samples) / 16000
    words = tuple(words)
    return DecodedChunk(
        window=Window(source=0, index=0, offset=0.0, samples=samples),
        language=language,
        segments=[ChunkSegment(0.0, duration, "".join(words), words, (1,) * len(words))],
        token_probabilities=np.full(len(words), 0.9, dtype=np.float32),
        attention=np.zeros((1, len(words) + 1, int(duration * 50)), dtype=np.float32),
    )


def utterances(eval_dir: Path) -> list[str]:
    return sorted(p.stem for p in (eval_dir / "timit_dev").glob("*.json"))


def timit(eval_dir: Path, utterance: str) -> tuple[NDArray[np.float32], list[str], NDArray[np.float64]]:
    """Samples, words (with whisper's leading space) and manual (start, end) times of a timit_dev utterance."""
    folder = eval_dir / "timit_dev"
    reference = json.loads((folder / f"{utterance}.json").read_text())
    samples, rate = sf.read(folder / f"{utterance}.wav", dtype="float32")
    assert rate == 16000
    words = [" " + w["word"] for w in reference["words"]]
    return samples, words, np.array([(w["start"], w["end"]) for w in reference["words"]])


def edges(timed: tuple[tuple[Word, ...], ...]) -> NDArray[np.float64]:
    return np.array([(w.start, w.end) for words in timed for w in words])


def test_edges_late_by_120_ms_move_onto_the_manual_boundaries(eval_dir: Path) -> None:
    errors = []
    for utterance in utterances(eval_dir)[:8]:
        samples, words, truth = timit(eval_dir, utterance)
        late = GivenTimes(tuple(map(tuple, truth + 0.12)))
        errors.append(np.abs(edges(PhoneticAligner(late).align(chunk_of(samples, words))) - truth))
    pooled = np.concatenate(errors)
    assert (pooled <= 0.05).mean() >= 0.8
    assert pooled.mean() < 0.04


def test_sentence_pauses_appear_where_the_inner_aligner_left_none() -> None:
    samples, rate = sf.read(REPO / "samples" / "sample.wav", dtype="float32")
    sentences = [[" " + w for w in s.split()] for s in SAMPLE_SENTENCES]
    chunk = chunk_of(samples, [w for s in sentences for w in s])
    timed = edges(PhoneticAligner(FakeAligner(), max_shift=20.0).align(chunk))  # words spread evenly, no gaps
    last_words = np.cumsum([len(s) for s in sentences])[:-1] - 1
    gaps = timed[last_words + 1, 0] - timed[last_words, 1]
    assert (gaps > 0.4).all(), gaps  # the sample has 700 ms of silence between sentences


def test_edges_far_from_the_inner_aligners_are_not_taken(eval_dir: Path) -> None:
    samples, words, truth = timit(eval_dir, utterances(eval_dir)[0])
    shifted = truth + 1.0
    aligner = PhoneticAligner(GivenTimes(tuple(map(tuple, shifted))), max_shift=0.3)
    timed = edges(aligner.align(chunk_of(samples, words)))
    np.testing.assert_array_equal(timed, shifted)


def test_other_languages_keep_the_inner_aligners_times(eval_dir: Path) -> None:
    samples, words, truth = timit(eval_dir, utterances(eval_dir)[0])
    inner = GivenTimes(tuple(map(tuple, truth + 0.12)))
    chunk = chunk_of(samples, words, language="de")
    assert PhoneticAligner(inner).align(chunk) == inner.align(chunk)


def test_silence_and_words_missing_from_the_dictionary_give_ordered_times_in_the_window() -> None:
    words = [" The", " Zorblaxian", " 1990", " ships", "—"]
    for samples in (np.zeros(32000, dtype=np.float32), np.random.default_rng(0).normal(0, 0.1, 32000)):
        chunk = chunk_of(samples.astype(np.float32), words)
        times = edges(PhoneticAligner(FakeAligner(), max_shift=5.0).align(chunk)).ravel()
        assert (np.diff(times) >= 0).all() and times[0] >= 0.0 and times[-1] <= 2.0


def test_a_word_of_punctuation_alone_keeps_its_inner_times(eval_dir: Path) -> None:
    samples, words, truth = timit(eval_dir, utterances(eval_dir)[0])
    spans = forced_alignment([*words[:2], " —", *words[2:]], samples)
    assert spans is not None
    assert np.isnan(spans[2]).all() and np.isfinite(np.delete(spans, 2, axis=0)).all()


def test_threads_each_get_their_own_decoder_and_the_same_times(eval_dir: Path) -> None:
    samples, words, truth = timit(eval_dir, utterances(eval_dir)[1])
    aligner = PhoneticAligner(GivenTimes(tuple(map(tuple, truth + 0.05))))
    chunk = chunk_of(samples, words)
    alone = aligner.align(chunk)
    results: list[object] = []

    def work() -> None:
        results.extend(aligner.align(chunk) for _ in range(3))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [alone] * 6


def test_the_aligner_pickles_for_word_timing_processes() -> None:
    aligner = PhoneticAligner(DtwAligner(lag_seconds=-0.08))
    assert pickle.loads(pickle.dumps(aligner)) == aligner


def test_a_word_timing_process_gives_the_times_a_thread_gives() -> None:
    samples, _rate = sf.read(REPO / "samples" / "sample.wav", dtype="float32")
    chunk = chunk_of(samples, [" " + w for s in SAMPLE_SENTENCES for w in s.split()])
    aligner = PhoneticAligner(FakeAligner(), max_shift=20.0)
    with WordTiming(aligner, threads=1, processes=1, first_batch_windows=1) as timing:
        timing.batch_started(1)
        assert timing.uses_processes
        in_process = timing.submit(chunk, word_timestamps=True).result()
    with WordTiming(aligner, threads=1) as timing:
        on_thread = timing.submit(chunk, word_timestamps=True).result()
    assert in_process == on_thread
