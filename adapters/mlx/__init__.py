"""The MLX side of the hexagon. ``mlx`` is imported lazily, inside ``load_decoder``, so that the rest of the
application (and ``app --help``) imports on machines without an MLX backend, and so that ``bootstrap`` can put the
optimized BLAS in place before ``libmlx`` is loaded on Linux CPUs.

Importing this package changes nothing: the composition root (``entrypoints.container``) calls ``bootstrap``
before it loads a decoder, as must any other code that imports ``mlx`` itself (the tests' ``conftest.py``)."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from onepass_whisper.adapters.models import read_alignment_heads
from onepass_whisper.domain.errors import ModelLoadError
from onepass_whisper.domain.ports import Decoder

if TYPE_CHECKING:
    from onepass_whisper.adapters.dtw.char_heads import HeadStore
    from onepass_whisper.adapters.mlx.step.settings import StepSettings

log = logging.getLogger(__name__)


def bootstrap(fast_blas: bool = True) -> str | None:
    """Set the process up for MLX, before anything imports ``mlx``: the optimized BLAS on Linux CPUs (unless
    ``fast_blas`` is off: ``ONEPASS_BLAS=off``, read by ``entrypoints.settings``), and ``mlx_whisper`` registered
    without its ``__init__`` (``_DeferredPackage``). Idempotent; returns what ``blas.enable_fast_blas`` loaded."""
    from onepass_whisper.adapters.mlx.blas import enable_fast_blas, fast_blas_failure

    loaded = enable_fast_blas(fast_blas)
    if loaded is None and (reason := fast_blas_failure()):
        log.warning("MLX keeps its reference BLAS (slow on CPU): %s", reason)
    register_mlx_whisper()
    return loaded


class _DeferredPackage(ModuleType):
    """``mlx_whisper`` before its ``__init__`` has run (``register_mlx_whisper``).

    Asked for a name it lacks (PEP 562), it imports the submodule of that name, as ``__init__`` would have
    (``mlx_whisper.audio``; the import system's own probe in ``from . import whisper``); for ``transcribe`` (the
    function ``__init__`` binds over the submodule of that name) and ``__version__`` it runs the real ``__init__``,
    as it does once anything imports the ``transcribe`` submodule: code that wants the whole package gets it.
    """

    def __getattr__(self, name: str) -> object:
        if name in ("transcribe", "__version__"):
            return getattr(self._initialised(), name)
        if not name.startswith("__") and importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            return importlib.import_module(f"{self.__name__}.{name}")
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "transcribe" and isinstance(value, ModuleType):  # the submodule, just imported
            self._initialised()

    def _initialised(self) -> ModuleType:
        """Runs the package's own ``__init__`` in this module, once: a plain module from then on."""
        self.__class__ = ModuleType  # type: ignore[assignment]  # first: the __init__'s own imports set names
        assert self.__spec__ is not None and self.__spec__.loader is not None
        self.__spec__.loader.exec_module(self)
        return self


def register_mlx_whisper() -> None:
    """Register the ``mlx_whisper`` package without running its ``__init__`` (``_DeferredPackage``).

    Its ``__init__`` imports ``transcribe`` and with it ``timing``: scipy.signal and numba, ~1 s of every start on
    a small CPU (``python -X importtime``; ``app transcribe`` of the 12-s sample 3.6 -> 2.6 s), for code this product
    never runs: it takes the model, tokenizer, audio, decoding and writer modules.
    """
    if "mlx_whisper" in sys.modules:
        return
    spec = importlib.util.find_spec("mlx_whisper")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed: the import that needs it says so
    package = importlib.util.module_from_spec(spec)  # its __path__ set: submodules import as usual
    package.__class__ = _DeferredPackage
    sys.modules["mlx_whisper"] = package


def load_decoder(
    folder: Path,
    name: str,
    dtype: str | None = None,
    settings: StepSettings | None = None,
    char_timing: bool = False,
    char_heads: HeadStore | None = None,
) -> Decoder:
    """Load the model in ``folder`` (mlx-whisper layout) as a batched ``Decoder`` (after ``bootstrap``).

    ``dtype``: "float32" or "float16"; by default float32 on the CPU (no faster in float16 there) and float16 on a GPU.
    ``settings``: the step's (``StepSettings``), by default its defaults. ``char_timing``: the decoder's
    character-forcing pass for word timing (``char_forcing.py``), and ``char_heads`` where the choice of its rows'
    heads is kept (``adapters/dtw/char_heads.py``).
    """
    import mlx.core as mx
    from mlx_whisper.load_models import load_model

    from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder
    from onepass_whisper.adapters.mlx.step.settings import StepSettings

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
    heads = read_alignment_heads(folder)
    return MlxWhisperDecoder(
        model,
        name=name,
        alignment_heads=heads,
        settings=settings or StepSettings(),
        char_timing=char_timing,
        char_heads=char_heads,
    )
