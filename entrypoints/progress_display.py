"""``app transcribe``'s progress bar on stderr: windows decoded of those known, and the speed in audio seconds per
second. It is shown only on a terminal, and never with ``--quiet``; it disappears when the run ends."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from onepass_whisper.domain.audio import SAMPLE_RATE, Truncation
from onepass_whisper.domain.ports import AudioBlocks, AudioSource, ProgressSink


class MeasuredAudio:
    """The container's ``AudioSource``, counting the seconds of audio read, for the progress bar's speed."""

    def __init__(self, inner: AudioSource) -> None:
        self.inner = inner
        self.seconds_read = 0.0

    def stream(self, path: Path) -> AudioBlocks:
        blocks = self.inner.stream(path)
        while True:
            try:
                block = next(blocks)
            except StopIteration as end:
                truncated: Truncation | None = end.value  # the input's
                return truncated
            self.seconds_read += len(block) / SAMPLE_RATE
            yield block


class AudioClock:
    """Audio seconds behind ``done`` of ``total`` windows: the audio read so far, in the share of its windows that
    are decoded (inputs are read as the batches need them, so this is close)."""

    def __init__(self, audio: MeasuredAudio) -> None:
        self.audio = audio

    def seconds(self, done: float, total: int) -> float:
        return self.audio.seconds_read * done / total if total else 0.0


def progress_bar(stderr: Console, show: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not show,
    )


def windows_progress(bar: Progress, task: TaskID, clock: AudioClock, started: float) -> ProgressSink:
    """The service's progress reports shown on ``bar``'s ``task``, with the speed since ``started``."""

    def progress(done: float, total: int) -> None:
        speed = clock.seconds(done, total) / max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=done, total=total, speed=f"{speed:.1f} audio s/s")

    return progress
