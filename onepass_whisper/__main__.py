"""``python -m onepass_whisper ...``: the ``app`` command without the installed script."""

from onepass_whisper.entrypoints.cli import app

app(prog_name="app")
