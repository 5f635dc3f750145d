"""What the commands say on stderr, one line each, and the output-folder check they share."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text


def one_line(message: str) -> str:
    return " ".join(message.split())


def error(stderr: Console, message: str) -> None:
    stderr.print(Text.assemble(("error: ", "bold red"), one_line(message)))


def warn(stderr: Console, message: str) -> None:
    stderr.print(Text.assemble(("warning: ", "yellow"), one_line(message)))


def note(stderr: Console, message: str) -> None:
    stderr.print(Text(one_line(message), style="dim"))


def check_output_dir(folder: Path, stderr: Console, exit_code: int) -> None:
    """Create ``folder`` and make sure a file can be written there; else say why and exit with ``exit_code``.

    A path to an existing file gets its own message: ``mkdir``'s "File exists" would not say which of the two
    (the folder or a file in it) is the problem."""
    if folder.exists() and not folder.is_dir():
        error(stderr, f"the output folder {folder} is a file; give a folder (it is created if needed)")
        raise typer.Exit(exit_code)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        error(stderr, f"cannot write to the output folder {folder}: {exc.strerror or exc}")
        raise typer.Exit(exit_code) from exc
