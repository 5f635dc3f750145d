"""Failures the user can act on. Programming errors stay ``assert``/``ValueError``."""

from __future__ import annotations

from pathlib import Path


class TranscriptionError(Exception):
    """Base for failures the user can act on."""


class AudioLoadError(TranscriptionError):
    """An input could not be read as audio."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"cannot read audio {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ModelLoadError(TranscriptionError):
    """A model name could not be resolved, converted or loaded."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot load model {name!r}: {reason}")
        self.name = name
        self.reason = reason


class UnsupportedLanguageError(TranscriptionError):
    """A language was asked for that the model cannot produce."""

    def __init__(self, language: str, reason: str) -> None:
        super().__init__(f"unsupported language {language!r}: {reason}")
        self.language = language


class InvalidOptionError(TranscriptionError):
    """An option value that no model accepts (caught before any work starts)."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"invalid option {option}: {reason}")
        self.option = option


class OutputWriteError(TranscriptionError):
    """A transcript could not be written."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = Path(path)
