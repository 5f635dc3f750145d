"""``app`` on the real audio reader and writers, with a fake model that can be held mid-run: a real process for
``tests/e2e/test_signals.py`` to interrupt (``python -m tests.e2e.slow_app transcribe ...``).

Environment: ``SLOW_APP_MARKS``, a folder where the model writes ``batch-<n>`` as it starts its n-th batch (from 1);
``SLOW_APP_HOLD_AT``, the batch at which it then waits until the process is signalled (unset: it never waits).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from onepass_whisper.domain.audio import DecodedChunk, Window
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import BatchProgress
from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.fakes import FakeAligner, FakeDecoder


class HeldDecoder(FakeDecoder):
    """A ``FakeDecoder`` that marks each batch it starts and blocks at batch ``hold_at``."""

    def __init__(self, marks: Path, hold_at: int | None) -> None:
        super().__init__("hello world")
        self.marks = marks
        self.hold_at = hold_at

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        number = len(self.batches) + 1
        (self.marks / f"batch-{number}").touch()
        while number == self.hold_at:  # until a signal's exception unwinds the program
            time.sleep(0.05)
        return super().decode_batch(windows, options)


def main() -> None:
    hold_at = os.environ.get("SLOW_APP_HOLD_AT")
    decoder = HeldDecoder(Path(os.environ["SLOW_APP_MARKS"]), int(hold_at) if hold_at else None)
    container = Container()
    with container.override_providers(decoder=decoder, aligner=FakeAligner()):
        app(prog_name="app", obj=container)


if __name__ == "__main__":
    main()
