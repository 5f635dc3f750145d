"""The project's own evaluation sets (``tests/data/eval``) read as ``app eval`` corpora: every reference parses, its
words are ordered and lie in its audio, its text and its words say the same, and every WAV is readable 16-kHz mono.

A broken set would otherwise show only as odd numbers in ``app eval`` (a missing WAV is a failed utterance scored as
empty; words out of order pair with the wrong hypothesis words). Nothing here transcribes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import matching_key
from onepass_whisper.entrypoints.eval_command import read_corpus
from tests.conftest import REPO

DATA = REPO / "tests" / "data" / "eval"
FOLDERS = sorted(p.name for p in DATA.iterdir() if p.is_dir())
EDGE_SLACK = 0.01  # seconds: MFA's last interval may end on the audio's last 10-ms frame


def test_the_french_set_is_there() -> None:
    assert "fr_librivox_mfa" in FOLDERS


@pytest.fixture(scope="module", params=FOLDERS)
def folder(request: pytest.FixtureRequest) -> Path:
    return DATA / str(request.param)


def test_every_reference_file_is_an_utterance(folder: Path) -> None:
    corpus = read_corpus(folder)
    assert len(corpus) == len(list(folder.glob("*.json"))) > 0
    assert {u.reference.group for u in corpus} == {folder.name}
    assert len({u.reference.name for u in corpus}) == len(corpus)


def test_every_audio_file_is_readable_16k_mono_pcm16(folder: Path) -> None:
    for utterance in read_corpus(folder):
        info = sf.info(utterance.audio)
        record = json.loads(utterance.audio.with_suffix(".json").read_text(encoding="utf-8"))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16"), utterance.audio.name
        assert info.frames / info.samplerate == pytest.approx(record["duration"], abs=1e-3)
        samples, _ = sf.read(utterance.audio, dtype="float32")
        assert len(samples) == info.frames and abs(samples).max() > 0.05  # sound, not silence


def test_words_are_ordered_and_inside_the_audio(folder: Path) -> None:
    for utterance in read_corpus(folder):
        words = utterance.reference.words
        duration = sf.info(utterance.audio).duration
        assert words, utterance.reference.name
        for word in words:
            assert word.text.strip() and 0.0 <= word.start < word.end <= duration + EDGE_SLACK, word
        for before, after in zip(words, words[1:], strict=False):
            assert before.end <= after.start, (before, after)


def test_the_words_spell_the_text(folder: Path) -> None:
    """After the evaluation's own normalisation, the timed words are the text's words: WER and timing agree."""
    metrics = WhisperTextMetrics()
    for utterance in read_corpus(folder):
        spoken = "".join(metrics.normalize(utterance.reference.text).split())
        timed = "".join(matching_key(w.text, metrics) for w in utterance.reference.words)
        assert timed == spoken, utterance.reference.name


def test_each_set_says_where_it_comes_from_and_its_licence(folder: Path) -> None:
    readme = (folder / "README.md").read_text(encoding="utf-8").lower()
    assert "licence" in readme and "source" in readme and "commit" in readme
    for path in folder.glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        assert record["source"] and record["license"] and record["alignment"], path.name
