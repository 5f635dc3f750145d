"""Whisper's language table (mlx-whisper's tokenizer module), for answers that name a language, without MLX."""

from __future__ import annotations

import functools

from onepass_whisper.adapters.mlx import register_mlx_whisper


@functools.cache
def language_names() -> dict[str, str]:
    """Code -> English name (``"en"`` -> ``"english"``), as whisper's ``LANGUAGES``.

    The tokenizer module needs only tiktoken; registering the package without its ``__init__`` first keeps that
    ``__init__`` (MLX, numba, scipy) from running just to name a language.
    """
    register_mlx_whisper()
    from mlx_whisper.tokenizer import LANGUAGES

    return dict(LANGUAGES)
