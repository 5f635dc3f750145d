"""OnePass Whisper: batched Whisper transcription on MLX with word timestamps from one decoding pass.

What is installed and imported is this one package, ``onepass_whisper``, with the design's four layers under it
(``onepass_whisper.domain``, ``.application``, ``.adapters``, ``.entrypoints``). The repository keeps the layers at
its top level, as the design card lays them out; here they are symbolic links to those folders, and a wheel holds
them as real folders. So an installed copy takes no top-level name but its own: a bare ``entrypoints`` (a PyPI
package Jupyter depends on) or ``domain`` is never shadowed. ``py.typed`` marks the package as typed (PEP 561).
"""

from importlib import metadata

try:
    __version__ = metadata.version("onepass-whisper")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onepass_whisper.entrypoints.api import Transcriber, transcribe

__all__ = ["Transcriber", "transcribe", "__version__"]


def __getattr__(name: str) -> Any:
    """``from onepass_whisper import transcribe, Transcriber``, imported on first use (PEP 562): the facade pulls in
    the container and its adapters, which ``import onepass_whisper.domain`` alone should not pay for."""
    if name in ("Transcriber", "transcribe"):
        from onepass_whisper.entrypoints import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
