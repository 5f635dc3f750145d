"""Failures the user can act on. Programming errors stay ``assert``/``ValueError``."""

from __future__ import annotations

from pathlib import Path


class TranscriptionError(Exception):
    """Base for failures the user can act on."""

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled as its class, message and attributes: subclasses' ``__init__`` takes other arguments than the
        message, which ``Exception``'s own pickling passes back (errors cross to word-timing processes and Ray)."""
        return (_restore, (type(self), self.args, dict(self.__dict__)))


def _restore(kind: type[TranscriptionError], args: tuple[object, ...], state: dict[str, object]) -> TranscriptionError:
    error = kind.__new__(kind)
    error.args = args
    error.__dict__.update(state)
    return error


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
