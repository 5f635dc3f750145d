"""The MLX side of the hexagon. ``mlx`` is imported lazily, inside ``load_decoder``, so that the rest of the
application (and ``app --help``) imports on machines without an MLX backend, and so that the optimized BLAS can be
put in place before ``libmlx`` is loaded on Linux CPUs."""

from __future__ import annotations

import logging
from pathlib import Path

from adapters.models import read_alignment_heads
from domain.errors import ModelLoadError
from domain.ports import Decoder

log = logging.getLogger(__name__)


def _fast_blas() -> None:
    try:
        from adapters.mlx.blas import enable_fast_blas, fast_blas_failure
    except ImportError:  # pragma: no cover - blas.py ships with the package
        return
    if enable_fast_blas() is None and (reason := fast_blas_failure()):
        log.warning("MLX keeps its reference BLAS (slow on CPU): %s", reason)


_fast_blas()  # before anything imports mlx: every module of this package is imported after this one


def load_decoder(folder: Path, name: str, dtype: str | None = None) -> Decoder:
    """Load the model in ``folder`` (mlx-whisper layout) as a batched ``Decoder``.

    ``dtype``: "float32" or "float16"; by default float32 on the CPU (no faster in float16 there) and float16 on a GPU.
    """
    import mlx.core as mx
    from mlx_whisper.load_models import load_model

    from adapters.mlx.decoder import MlxWhisperDecoder

    if dtype is None:
        dtype = "float32" if mx.default_device() == mx.cpu else "float16"
    try:
        mx_dtype = mx.float32 if dtype == "float32" else mx.float16
        model = load_model(str(folder), dtype=mx_dtype)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:  # mx.load: RuntimeError on bad bytes
        raise ModelLoadError(name, f"{folder}: {' '.join(str(exc).split())}") from exc
    # load_model keeps the stored dtype (our cache keeps CT2's float16); on the CPU float16 has no BLAS path
    model.set_dtype(mx_dtype)
    mx.eval(model.parameters())
    return MlxWhisperDecoder(model, name=name, alignment_heads=read_alignment_heads(folder))
