"""``app serve`` on the real audio reader, with a fake model: a real process for ``tests/e2e/test_serve.py``
(``python -m tests.e2e.serve_app serve --port N ...``).

The model is ``LabelDecoder`` (one word a window, ``w<amplitude in thousandths>``: each upload's loudness labels its
words). Environment: ``SERVE_APP_HOLD``, a file: while it exists, every batch waits before decoding;
``SERVE_APP_NO_MODEL=1``: the model cannot be resolved (``ModelLoadError``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from onepass_whisper.entrypoints.cli import app
from onepass_whisper.entrypoints.container import Container
from tests.fakes import FakeAligner, FakeModelSource, LabelDecoder


class _FileGate(threading.Event):
    """Set while the hold file does not exist."""

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path

    def wait(self, timeout: float | None = None) -> bool:
        while self.path is not None and self.path.exists():
            time.sleep(0.02)
        return True


def main() -> None:
    hold = os.environ.get("SERVE_APP_HOLD")
    container = Container()
    if os.environ.get("SERVE_APP_NO_MODEL"):
        with container.override_providers(model_source=FakeModelSource({}), aligner=FakeAligner()):
            app(prog_name="app", obj=container)
        return
    decoder = LabelDecoder(gate=_FileGate(Path(hold) if hold else None))
    with container.override_providers(decoder=decoder, aligner=FakeAligner()):
        app(prog_name="app", obj=container)


if __name__ == "__main__":
    main()
