"""mlx-whisper's transcript writers (``mlx_whisper.writers``, the same as openai-whisper's), for ``adapters/writers.py``.

Imported as a plain submodule: ``bootstrap``'s ``_DeferredPackage`` stands for the package, so its ``__init__`` (MLX,
numba, scipy.signal: seconds of start-up on a small CPU) does not run for a module that needs only the standard
library. Here, inside ``adapters.mlx``, because ``mlx_whisper`` is imported nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def whisper_writers() -> dict[str, Callable[[str], Any]]:
    """mlx-whisper's writer classes by format (``get_writer``'s table; it builds one instance per output folder)."""
    from onepass_whisper.adapters.mlx import register_mlx_whisper

    register_mlx_whisper()  # a no-op once the package is imported, deferred or whole
    from mlx_whisper import writers

    return {"txt": writers.WriteTXT, "srt": writers.WriteSRT, "vtt": writers.WriteVTT, "tsv": writers.WriteTSV,
            "json": writers.WriteJSON}  # fmt: skip
