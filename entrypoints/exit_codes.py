"""``app transcribe``'s exit codes, and the help text that lists them (``docs/cli.md`` documents the same)."""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from onepass_whisper.entrypoints.signals import Terminated


class ExitCode(IntEnum):
    OK = 0  # every input transcribed, or skipped because its outputs exist
    INPUTS_FAILED = 1  # some inputs failed (each named on stderr); the others were written
    USAGE = 2  # bad arguments or options (Click's code), or options the model refuses
    MODEL = 3  # the model could not be resolved, converted or loaded
    OUTPUT_DIR = 4  # the output folder cannot be created or written
    TRUNCATED = 5  # every input written, but some were cut short (each named in a warning): they need a look
    INTERRUPTED = 130  # Ctrl-C (SIGINT); finished transcripts are kept, none is left half-written
    TERMINATED = 143  # SIGTERM (128 + 15), handled as Ctrl-C

    @classmethod
    def interrupted(cls, exc: KeyboardInterrupt) -> ExitCode:
        """Ctrl-C's code, or SIGTERM's when the interrupt is a ``Terminated``."""
        return cls.TERMINATED if isinstance(exc, Terminated) else cls.INTERRUPTED


EXIT_CODES_HELP: Final = (
    "[b]Exit codes[/b]: 0 all inputs done (or skipped: outputs exist) · 1 some inputs failed, each named on "
    "stderr, the others written · 2 usage error (bad option, no path given, a language or task the model "
    "refuses) · 3 the model could not be loaded · 4 the output folder is not writable · 5 all written, but some "
    "inputs were cut short (each named in a warning; what was there is transcribed) · 130 interrupted (Ctrl-C) · "
    "143 terminated (SIGTERM)."
)
