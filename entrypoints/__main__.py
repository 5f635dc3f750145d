"""``python -m entrypoints``: the same command line as ``app``."""

from onepass_whisper.entrypoints.cli import app

if __name__ == "__main__":
    app(prog_name="app")
