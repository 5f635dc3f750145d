"""``python -m onepass_whisper ...``: the ``app`` command without the installed script."""

from onepass_whisper.entrypoints.cli import app

if __name__ == "__main__":
    app(prog_name="app")
