"""Where model weights come from: built-in packages, local folders, the Hugging Face Hub; CTranslate2 conversion.

Numpy only: nothing here imports MLX (``adapters/mlx`` loads the folders that ``CachedModelSource`` returns).
"""

from __future__ import annotations

from onepass_whisper.adapters.models.ct2 import ModelDims
from onepass_whisper.adapters.models.source import CachedModelSource, ModelInfo, default_cache_dir, read_alignment_heads

__all__ = ["CachedModelSource", "ModelDims", "ModelInfo", "default_cache_dir", "read_alignment_heads"]
