"""The corpus run's bookkeeping (``application/corpus.py``) and the manifest file, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onepass_whisper.application.corpus import ManifestRecord, RetryBook, plan_corpus, read_manifest, take_batch
from onepass_whisper.entrypoints.corpus_command import ManifestFile

DONE = ManifestRecord("a.wav", "done", 12.5, 3.25)
FAILED = ManifestRecord("b.mp3", "failed", None, 0.5, "cannot read audio b.mp3: bad header", attempts=2)

records = st.builds(
    ManifestRecord,
    file=st.text(min_size=1),
    status=st.sampled_from(["done", "failed"]),
    duration=st.none() | st.floats(0, 1e6).map(lambda x: round(x, 3)),
    seconds=st.floats(0, 1e6).map(lambda x: round(x, 3)),
    error=st.none() | st.text(),
    attempts=st.integers(1, 9),
    truncated=st.none() | st.text(),
)


@given(records)
def test_a_record_survives_its_line(record: ManifestRecord) -> None:
    line = record.to_line()
    assert "\n" not in line
    assert ManifestRecord.from_line(line) == record


def test_a_line_has_the_documented_fields() -> None:
    assert json.loads(FAILED.to_line()) == {
        "file": "b.mp3",
        "status": "failed",
        "duration": None,
        "seconds": 0.5,
        "error": "cannot read audio b.mp3: bad header",
        "attempts": 2,
        "truncated": None,
    }


def test_a_line_of_an_earlier_version_without_truncated_reads() -> None:
    line = '{"file": "a.wav", "status": "done", "duration": 12.5, "seconds": 3.25, "error": null, "attempts": 1}'
    assert ManifestRecord.from_line(line) == DONE


def test_the_latest_record_wins_and_broken_lines_are_ignored() -> None:
    again = ManifestRecord("b.mp3", "done", 4.0, 1.0)
    lines = [DONE.to_line(), FAILED.to_line(), "", '{"file": "x.wav", "status": "maybe"}', again.to_line(), '{"fi']
    assert read_manifest(lines) == {"a.wav": DONE, "b.mp3": again}


def test_plan_skips_done_files_with_outputs_and_keeps_failures_unless_asked() -> None:
    files = ["a.wav", "b.mp3", "c.wav", "d.wav"]
    manifest = {"a.wav": DONE, "b.mp3": FAILED, "d.wav": ManifestRecord("d.wav", "done", 1.0, 1.0)}
    outputs = {"a.wav"}  # d.wav was done but its outputs were deleted

    plan = plan_corpus(files, manifest, outputs.__contains__)
    assert (plan.todo, plan.done_before, plan.failed_before) == (("c.wav", "d.wav"), ("a.wav",), ("b.mp3",))

    retry = plan_corpus(files, manifest, outputs.__contains__, retry_failed=True)
    assert (retry.todo, retry.failed_before) == (("b.mp3", "c.wav", "d.wav"), ())

    assert plan_corpus(files, manifest, outputs.__contains__, overwrite=True).todo == tuple(files)


def test_a_batch_lost_with_several_files_charges_none_and_isolates_them() -> None:
    book = RetryBook()
    queue = ["a", "b", "c", "d", "e"]
    assert take_batch(queue, book, 3) == ["a", "b", "c"]

    lost = book.lost(["b", "c"], "worker died")  # "a" was finished before the worker died
    assert lost.retry == ("b", "c") and lost.failed == ()
    queue[:0] = lost.retry

    assert take_batch(queue, book, 3) == ["b"]  # suspects go alone
    assert take_batch(queue, book, 3) == ["c"]
    assert take_batch(queue, book, 3) == ["d", "e"]
    assert take_batch(queue, book, 3) == []
    assert (book.attempts("a"), book.attempts("b"), book.attempts("d")) == (1, 2, 1)


def test_a_file_lost_alone_twice_fails_with_the_reason() -> None:
    book = RetryBook()
    queue = ["x", "y"]
    take_batch(queue, book, 2)
    queue[:0] = book.lost(["x", "y"], "worker died").retry

    first = take_batch(queue, book, 2)
    assert first == ["x"] and book.lost(first, "segfault").retry == ("x",)
    queue[:0] = ["x"]
    second = take_batch(queue, book, 2)
    lost = book.lost(second, "segfault again", seconds=2.0)

    assert lost.retry == ()
    (record,) = lost.failed
    assert record == ManifestRecord(
        "x", "failed", None, 2.0, "worker lost 2 times while transcribing it: segfault again", attempts=3
    )
    assert take_batch(queue, book, 2) == ["y"]


def test_suspects_behind_the_head_wait_for_their_own_batch() -> None:
    book = RetryBook()
    book.lost(["s1", "s2"], "worker died")
    queue = ["a", "s1", "b", "s2", "c"]
    assert take_batch(queue, book, 2) == ["a", "b"]
    assert queue == ["s1", "s2", "c"]
    assert take_batch(queue, book, 2) == ["s1"]


def test_the_manifest_file_appends_whole_lines_after_a_cut_one(tmp_path: Path) -> None:
    path = tmp_path / "out" / "manifest.jsonl"
    path.parent.mkdir()
    path.write_text(DONE.to_line() + "\n" + FAILED.to_line()[:20], encoding="utf-8")  # a crash mid-line
    manifest = ManifestFile(path)
    assert manifest.read() == {"a.wav": DONE}

    again, new = ManifestRecord("b.mp3", "done", 4.0, 1.0), ManifestRecord("c.wav", "done", 1.0, 1.0)
    manifest.append(again)
    manifest.append(new)
    manifest.close()

    assert path.read_text(encoding="utf-8").endswith("\n")
    assert ManifestFile(path).read() == {"a.wav": DONE, "b.mp3": again, "c.wav": new}


def test_a_missing_manifest_is_empty(tmp_path: Path) -> None:
    assert ManifestFile(tmp_path / "none.jsonl").read() == {}


@pytest.mark.parametrize("line", ["[]", '{"status": "done"}', '{"file": "a", "status": "ok"}', "not json"])
def test_lines_that_are_not_records_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        ManifestRecord.from_line(line)
