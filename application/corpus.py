"""A corpus run's bookkeeping, free of any engine: the manifest, what a rerun does, and what a lost batch costs.

The manifest is a JSON Lines file with one record per finished file (appended as each finishes; the latest record
of a file wins)::

    {"file": "2024/talk.wav", "status": "done", "duration": 1834.2, "seconds": 95.1, "error": null, "attempts": 1}
    {"file": "bad.mp3", "status": "failed", "duration": null, "seconds": 0.1, "error": "cannot read audio ...",
     "attempts": 1}

``file`` is the input's path relative to the corpus folder; ``duration`` seconds of audio (null when unknown);
``seconds`` the wall time its worker spent on it (see ``entrypoints/ray_engine.py``); ``attempts`` how many times
the run that wrote the record handed it to a worker; ``truncated`` (null unless) what a file done but cut short
lacks.

A batch of files is *lost* when its worker dies or raises before finishing them. Which of them was to blame is not
known when there were several, so none is charged: each is tried again alone. A file lost alone is charged one
attempt; at ``max_attempts`` it fails, with the reason. So a file that kills its worker every time fails after two
tries, and the files that shared its batch still complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, cast

from attrs import define, field, frozen

Status = Literal["done", "failed"]
STATUSES: tuple[Status, ...] = ("done", "failed")
MAX_ATTEMPTS = 2  # the rule: a file that fails twice is marked failed


@frozen
class ManifestRecord:
    """One file's outcome, as one line of the manifest."""

    file: str  # relative to the corpus folder, with forward slashes
    status: Status
    duration: float | None  # seconds of audio; None when the file could not be read
    seconds: float  # wall seconds its worker spent on it
    error: str | None = None  # why it failed; None when done
    attempts: int = 1
    truncated: str | None = None  # done, but the input was cut short: what is missing (``Truncation.describe``)

    def to_line(self) -> str:
        """The record as one JSON line (no trailing newline)."""
        return json.dumps(
            {
                "file": self.file,
                "status": self.status,
                "duration": None if self.duration is None else round(self.duration, 3),
                "seconds": round(self.seconds, 3),
                "error": self.error,
                "attempts": self.attempts,
                "truncated": self.truncated,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_line(cls, line: str) -> ManifestRecord:
        """Parse one manifest line; ``ValueError`` if it is not a record."""
        data = json.loads(line)
        if not isinstance(data, dict) or not isinstance(data.get("file"), str) or data.get("status") not in STATUSES:
            raise ValueError(f"not a manifest record: {line[:80]!r}")
        duration = data.get("duration")
        error = data.get("error")
        truncated = data.get("truncated")  # absent in manifests of earlier versions
        return cls(
            file=data["file"],
            status=cast(Status, data["status"]),
            duration=None if duration is None else float(duration),
            seconds=float(data.get("seconds") or 0.0),
            error=None if error is None else str(error),
            attempts=int(data.get("attempts") or 1),
            truncated=None if truncated is None else str(truncated),
        )


def read_manifest(lines: Iterable[str]) -> dict[str, ManifestRecord]:
    """The latest record of each file. Lines that are not records are ignored: a crash while appending can leave a
    truncated last line, and the file it was about is then simply done again."""
    records: dict[str, ManifestRecord] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            record = ManifestRecord.from_line(line)
        except ValueError:  # json.JSONDecodeError included
            continue
        records[record.file] = record
    return records


@frozen
class CorpusPlan:
    """What a run does with each file of the corpus, in corpus order."""

    todo: tuple[str, ...]
    done_before: tuple[str, ...]  # done in an earlier run, outputs present: skipped
    failed_before: tuple[str, ...]  # failed in an earlier run and not retried: still counted as failed


def plan_corpus(
    files: Sequence[str],
    records: Mapping[str, ManifestRecord],
    outputs_exist: Callable[[str], bool],
    *,
    retry_failed: bool = False,
    overwrite: bool = False,
) -> CorpusPlan:
    """Resume: a file done earlier whose outputs all exist is skipped; a file that failed earlier is tried again
    only with ``retry_failed``; every other file (new, or done but its outputs gone) is to do. ``overwrite`` does
    everything again."""
    todo: list[str] = []
    done: list[str] = []
    failed: list[str] = []
    for file in files:
        record = records.get(file)
        if overwrite or record is None:
            todo.append(file)
        elif record.status == "done":
            (done if outputs_exist(file) else todo).append(file)
        elif retry_failed:
            todo.append(file)
        else:
            failed.append(file)
    return CorpusPlan(tuple(todo), tuple(done), tuple(failed))


@frozen
class LostBatch:
    """What to do with the unfinished files of a lost batch."""

    retry: tuple[str, ...]  # to be tried again, each alone
    failed: tuple[ManifestRecord, ...]  # out of attempts


@define
class RetryBook:
    """Counts the attempts each file was handed out and charged, and which files must be tried alone (see the
    module doc)."""

    max_attempts: int = MAX_ATTEMPTS
    _handed: dict[str, int] = field(factory=dict, init=False)
    _charged: dict[str, int] = field(factory=dict, init=False)
    _suspects: set[str] = field(factory=set, init=False)

    def hand_out(self, files: Iterable[str]) -> None:
        """``files`` go to a worker (once more)."""
        for file in files:
            self._handed[file] = self._handed.get(file, 0) + 1

    def attempts(self, file: str) -> int:
        """How many times ``file`` has been handed to a worker so far."""
        return self._handed.get(file, 0)

    def is_suspect(self, file: str) -> bool:
        """Whether ``file`` was in a lost batch, and is therefore tried alone."""
        return file in self._suspects

    def lost(self, files: Sequence[str], reason: str, seconds: float = 0.0) -> LostBatch:
        """A worker died or raised while holding ``files`` (those it had not finished)."""
        self._suspects.update(files)
        if len(files) != 1:
            return LostBatch(retry=tuple(files), failed=())
        (file,) = files
        self._charged[file] = self._charged.get(file, 0) + 1
        if self._charged[file] < self.max_attempts:
            return LostBatch(retry=(file,), failed=())
        record = ManifestRecord(
            file=file,
            status="failed",
            duration=None,
            seconds=seconds,
            error=f"worker lost {self._charged[file]} times while transcribing it: {reason}",
            attempts=self.attempts(file),
        )
        return LostBatch(retry=(), failed=(record,))


def take_batch(queue: list[str], book: RetryBook, size: int) -> list[str]:
    """Remove and return the next batch from the front of ``queue`` (and count it handed out in ``book``): a
    suspect alone, else up to ``size`` files that are not suspects (suspects further back wait for their turn)."""
    if not queue:
        return []
    batch: list[str] = []
    rest: list[str] = []
    if book.is_suspect(queue[0]):
        batch, rest = queue[:1], queue[1:]
    else:
        for index, file in enumerate(queue):
            if len(batch) == size:
                rest.extend(queue[index:])
                break
            (rest if book.is_suspect(file) else batch).append(file)
    queue[:] = rest
    book.hand_out(batch)
    return batch
