"""The command line: the Typer ``app``, its ``--version``, and its commands, each in its own module.

``app transcribe`` (``transcribe_command``), ``app models`` (``models_command``), ``app eval`` (``eval_command``),
``app transcribe-corpus`` (``corpus_command``) and ``app serve`` (``serve_command``). The app's callback puts the
``Container`` in ``ctx.obj`` unless the caller gave one (tests pass one with fakes); the commands resolve their
adapters from it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.corpus_command import CORPUS_EXIT_CODES_HELP, transcribe_corpus
from onepass_whisper.entrypoints.eval_command import eval_command
from onepass_whisper.entrypoints.exit_codes import EXIT_CODES_HELP
from onepass_whisper.entrypoints.models_command import models_command
from onepass_whisper.entrypoints.serve_command import SERVE_EXIT_CODES_HELP, serve
from onepass_whisper.entrypoints.transcribe_command import transcribe

app = typer.Typer(
    name="app",
    help="Batched Whisper transcription on MLX, with word timestamps from one decoding pass.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=True,  # Typer's --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_show_locals=False,  # locals hold whole waveforms and model weights
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version() -> str:
    """The installed distribution's version (``pyproject.toml``'s, as installed); "unknown" when run uninstalled."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("onepass-whisper")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"onepass-whisper {version()}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Batched Whisper transcription on MLX, with word timestamps from one decoding pass."""
    if ctx.obj is None:  # tests pass obj=<a Container with fakes>
        ctx.obj = Container()


# `app transcribe PATH...`: audio files and folders into txt, srt, vtt, tsv and json (entrypoints/transcribe_command.py)
app.command("transcribe", epilog=EXIT_CODES_HELP)(transcribe)

# `app models [--install NAME]`: the built-in models, installing them, the cache (entrypoints/models_command.py)
app.command("models")(models_command)

# `app eval DATASET`: WER and word-timing accuracy (entrypoints/eval_command.py)
app.command("eval")(eval_command)

# `app transcribe-corpus INPUT_DIR -o OUT`: a folder on Ray workers, with a manifest (entrypoints/corpus_command.py)
app.command("transcribe-corpus", epilog=CORPUS_EXIT_CODES_HELP)(transcribe_corpus)

# `app serve`: an OpenAI-compatible server whose requests share decoder batches (entrypoints/serve_command.py)
app.command("serve", epilog=SERVE_EXIT_CODES_HELP)(serve)
