"""SIGTERM handled as Ctrl-C while a command runs, so that both unwind the same way.

Python's default for SIGTERM ends the process on the spot, leaving temporary files behind; raised as a
``KeyboardInterrupt`` instead, it runs every ``finally`` and ``except KeyboardInterrupt`` on the way out, and the
writers remove their temporary files. The exit code still tells the two apart (``ExitCode.interrupted``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does (temporary files removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises ``Terminated``. Python's default would end the process on the spot, leaving
    temporary files behind; a handler can only be set from the main thread (else this does nothing)."""

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
