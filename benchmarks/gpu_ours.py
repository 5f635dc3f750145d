"""``benchmarks.gpu``'s own engine (``ours``), its model and windows, and ``--check-model``: a module of their own,
imported once (``benchmarks.gpu`` runs as ``__main__``), so that the settings ``main`` sets here (``ALIGN_PROCESSES``,
the smoke shapes) are the ones every engine reads.

Word timing in ``bench_ours``, two ways side by side, the same windows:

- device (``realtime``, ``realtime_pipelined``): the decoder's device alignment stage (``adapters/mlx/alignment.py``,
  on by default on MLX's CUDA backend; forced on elsewhere) gives each window's DTW frames inside
  ``decode_batch``; the host then times words from them (whisper's heuristics, refinement);
- host (``realtime_host_alignment``, ``realtime_pipelined_host_alignment``): the attention rows cross to the host and
  ``DtwAligner`` does the reduction and DTW in numpy, as before.

``--smoke`` runs the same code at a tiny random model (2 layers of 256), for a check on the CPU backend that the GPU
run will not die of a typo.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import evolve

LARGE_V3 = dict(
    n_mels=128,
    n_audio_ctx=1500,
    n_audio_state=1280,
    n_audio_head=20,
    n_audio_layer=32,
    n_vocab=51866,
    n_text_ctx=448,
    n_text_state=1280,
    n_text_head=20,
    n_text_layer=32,
)
# ``--smoke``: large-v3's vocabulary, mels and context (its tokenizer, its 30-s windows), a tiny network of its
# head size (64: the CUDA kernels' shapes)
SMOKE_SHAPES = dict(n_audio_state=256, n_audio_head=4, n_audio_layer=2, n_text_state=256, n_text_head=4, n_text_layer=2)
# openai-whisper's alignment heads of large-v3 (whisper/__init__.py, _ALIGNMENT_HEADS["large-v3"])
LARGE_V3_HEADS = b"ABzY8gWO1E0{>%R7(9S+Kn!D~%ngiGaR?*L!iJG9p-nab0JQ=-{D1-g00"
WINDOW_SECONDS = 30.0
SOT_EN_TRANSCRIBE = [50258, 50259, 50360]  # large-v3: <|startoftranscript|><|en|><|transcribe|>

ALIGN_PROCESSES = 0  # word-timing processes of the overlapped run (``--align-processes``; 0: threads)
SMOKE = False  # ``--smoke``: ``use_smoke_shapes`` has run


def use_smoke_shapes() -> None:
    """The tiny model's shapes, in ``LARGE_V3`` itself (every engine reads it), every head of its last layer aligned."""
    global SMOKE
    LARGE_V3.update(SMOKE_SHAPES)
    SMOKE = True


def alignment_heads() -> list[tuple[int, int]]:
    layers, heads = LARGE_V3["n_text_layer"], LARGE_V3["n_text_head"]
    if SMOKE:
        return [(layers - 1, head) for head in range(heads)]
    mask = np.frombuffer(gzip.decompress(base64.b85decode(LARGE_V3_HEADS)), dtype=bool)
    return [(int(i) // heads, int(i) % heads) for i in np.flatnonzero(mask.reshape(layers, heads).ravel())]


def sync_mlx() -> None:
    import mlx.core as mx

    mx.synchronize()


def random_large_v3() -> Any:
    """Our batched decoder over a Whisper of large-v3's shapes with random float16 weights (seeded); with the
    device alignment stage where the device has it by default, and forced on elsewhere (the CPU's smoke run)."""
    from onepass_whisper.adapters.mlx import bootstrap

    bootstrap()  # before mlx loads
    import mlx.core as mx  # noqa: I001
    from mlx_whisper.whisper import ModelDimensions, Whisper

    from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder

    mx.random.seed(0)
    dtype = mx.float32 if mx.default_device() == mx.cpu else mx.float16
    model = Whisper(ModelDimensions(**LARGE_V3), dtype=dtype)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    decoder = MlxWhisperDecoder(
        model, name="large-v3-random", alignment_heads=alignment_heads(), settings=step_settings()
    )
    if decoder.alignment is None:
        decoder.alignment = device_alignment()
    return decoder


def device_alignment() -> Any:
    """The device alignment stage this device gets when forced on (``choose_alignment``)."""
    from onepass_whisper.adapters.mlx.step.factory import choose_alignment
    from onepass_whisper.adapters.mlx.step.settings import StepSettings

    return choose_alignment(StepSettings(device_alignment=True))


def step_settings() -> Any:
    """The step's settings from the environment (``ONEPASS_CUDA_KERNELS=0``: the before of a before/after)."""
    from onepass_whisper.adapters.mlx.step.settings import StepSettings
    from onepass_whisper.entrypoints.settings import Settings

    settings = Settings.from_environment()
    return StepSettings(cuda_kernels=settings.cuda_kernels, device_alignment=settings.device_alignment)


def random_windows(rng: np.random.Generator, batch: int) -> list[Any]:
    """``batch`` windows of 30 s of seeded noise (every window decodes ``--tokens`` tokens regardless)."""
    from onepass_whisper.domain.audio import SAMPLE_RATE, Window

    samples = (0.1 * rng.standard_normal((batch, int(WINDOW_SECONDS * SAMPLE_RATE)))).astype(np.float32)
    return [Window(source=i, index=0, offset=0.0, samples=samples[i]) for i in range(batch)]


def fixed_length_options(tokens: int) -> Any:
    """Greedy, English, no fallback, end-of-text suppressed: every window decodes exactly ``tokens`` tokens."""
    from onepass_whisper.domain.model import TranscribeOptions

    eot = 50257
    return TranscribeOptions(
        language="en",
        temperatures=(0.0,),
        compression_ratio_threshold=None,
        logprob_threshold=None,
        no_speech_threshold=None,
        suppress_tokens=f"-1,{eot}",
        suppress_blank=False,
        max_new_tokens=tokens,
    )


def _align_all(aligner: Any, chunks: Sequence[Any]) -> int:
    """Words of every chunk, one after the other on this thread; the failures (random weights may give NaN
    attention: counted, not hidden)."""
    failures = 0
    for chunk in chunks:
        try:
            aligner.align(chunk)
        except Exception:  # noqa: BLE001
            failures += 1
    return failures


def bench_ours(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    decoder = random_large_v3()
    import mlx.core as mx  # noqa: I001

    from onepass_whisper.adapters.dtw import DtwAligner

    aligner = DtwAligner()
    on_device = decoder.alignment  # the device alignment stage; None: the host aligner's way
    options = fixed_length_options(tokens)
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        windows = random_windows(rng, batch)
        for stage in (on_device, None):  # warm-up: kernels built, pools filled, either way
            decoder.alignment = stage
            decoder.decode_batch(windows[: min(batch, 2)], options)
        for _ in range(repeats):
            sync_mlx()
            t0 = time.perf_counter()
            features = decoder._encode(windows)
            mx.eval(features)
            sync_mlx()
            t1 = time.perf_counter()
            attempts = decoder._decode(features, ["en"] * batch, options, 0.0)
            sync_mlx()
            t2 = time.perf_counter()
            decoder.alignment = None  # the host's way: the rows cross over, numpy's DTW
            chunks = decoder.decode_batch(windows, options)
            t3 = time.perf_counter()
            host_failures = _align_all(aligner, chunks)
            t4 = time.perf_counter()
            decoder.alignment = on_device  # the device's way: only the token frames cross over
            chunks = decoder.decode_batch(windows, options)
            t5 = time.perf_counter()
            failures = _align_all(aligner, chunks)
            t6 = time.perf_counter()
            # one batch as the service runs a one-batch file: words timed on its threads (processes come from a
            # second batch on), the wall until the last window's words
            one_batch, _ = _pipelined(decoder, aligner, windows, options, batches=1, warm=(), processes=0)
            pipelined, pipelined_decode_s = _pipelined(
                decoder, aligner, windows, options, batches=3, warm=chunks[: 2 * ALIGN_PROCESSES]
            )
            # the same with each next batch's encoder started on a second stream (``encode_ahead``), as the
            # service does on a GPU
            ahead, ahead_decode_s = _pipelined(
                decoder, aligner, windows, options, batches=3, warm=chunks[: 2 * ALIGN_PROCESSES], ahead=True
            )
            decoder.alignment = None
            pipelined_host, pipelined_host_decode_s = _pipelined(decoder, aligner, windows, options, batches=3, warm=())
            back_to_back, back_to_back_decode_s = _pipelined(decoder, None, windows, options, batches=3, warm=())
            decoder.alignment = on_device
            steps = max(len(a.tokens) for a in attempts)
            results.append(
                dict(
                    engine="ours",
                    batch=batch,
                    tokens=steps,
                    word_timing="device" if on_device is not None else "host",
                    encoder_ms_per_window=1000 * (t1 - t0) / batch,
                    decoder_ms_per_step=1000 * (t2 - t1) / steps,
                    decode_wall_s=t5 - t4,  # decode_batch with the device alignment stage in it
                    align_wall_s=t6 - t5,  # the host's words from the token frames
                    align_failures=failures,
                    realtime=batch * WINDOW_SECONDS / (t6 - t4),
                    realtime_one_batch_threads=one_batch,
                    host_alignment_decode_wall_s=t3 - t2,  # decode_batch with the rows read to the host
                    host_alignment_wall_s=t4 - t3,  # DtwAligner on every window, one after the other
                    host_align_failures=host_failures,
                    realtime_host_alignment=batch * WINDOW_SECONDS / (t4 - t2),
                    realtime_without_alignment=batch * WINDOW_SECONDS / (t3 - t2),
                    realtime_pipelined=pipelined,
                    pipelined_decode_s=pipelined_decode_s,
                    realtime_pipelined_ahead=ahead if decoder.encodes_ahead else None,
                    pipelined_ahead_decode_s=ahead_decode_s,
                    realtime_pipelined_host_alignment=pipelined_host,
                    pipelined_host_alignment_decode_s=pipelined_host_decode_s,
                    realtime_back_to_back=back_to_back,  # the same batches without word timing
                    back_to_back_decode_s=back_to_back_decode_s,
                    align_processes=ALIGN_PROCESSES,
                    host_cores=os.cpu_count(),
                )
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def _pipelined(
    decoder: Any,
    aligner: Any,
    windows: Sequence[Any],
    options: Any,
    batches: int,
    warm: Sequence[Any],
    processes: int | None = None,
    ahead: bool = False,
) -> tuple[float, list[float]]:
    """Realtime factor of ``batches`` batches decoded back to back, words timed meanwhile, and each batch's
    ``decode_batch`` wall time.

    The same overlap as ``TranscriptionService``: a decoded batch's word timing runs on ``WordTiming``'s pool (the
    threads, or ``ALIGN_PROCESSES`` worker processes, started and warmed with the ``warm`` chunks beforehand, as
    they are in a long run) while the next batch decodes. ``aligner`` None: no word timing at all (the batches
    back to back alone). ``processes``: instead of ``ALIGN_PROCESSES``. ``ahead``: each next batch (copies of the
    windows, so that each batch is its own) started by ``encode_ahead`` before this one's ``decode_batch``.
    """
    from onepass_whisper.application.word_timing import WordTiming, default_align_workers

    count = ALIGN_PROCESSES if processes is None else processes
    with WordTiming(aligner, default_align_workers(), count) as timing:
        timing.start_processes()
        for future in [timing.submit(chunk, True) for chunk in warm if aligner is not None]:
            future.result()
        sync_mlx()
        start = time.perf_counter()
        futures, decode_s = [], []
        batches_of = [list(windows), *([evolve(w) if ahead else w for w in windows] for _ in range(batches - 1))]
        for number in range(batches):
            began = time.perf_counter()
            if ahead and number + 1 < batches:
                decoder.encode_ahead(batches_of[number + 1], options)
            chunks = decoder.decode_batch(batches_of[number], options)
            decode_s.append(time.perf_counter() - began)
            futures += [timing.submit(chunk, True) for chunk in chunks if aligner is not None]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return batches * len(windows) * WINDOW_SECONDS / elapsed, decode_s


def check_model(folder: Path, audio: Path) -> dict[str, Any]:
    """Transcribe ``audio`` with real weights, words timed on the device and on the host; text and word times to
    compare across backends, and how far the device's times lie from the host's (0 or a frame)."""
    from onepass_whisper.adapters.dtw import DtwAligner
    from onepass_whisper.adapters.mlx import bootstrap, load_decoder

    bootstrap()  # first: the BLAS before mlx loads

    import mlx.core as mx  # noqa: I001
    from onepass_whisper.application.transcription import TranscriptionService
    from onepass_whisper.domain.audio import Waveform
    from onepass_whisper.domain.model import TranscribeOptions

    with wave.open(str(audio)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    results: dict[str, Any] = {"device": str(mx.default_device())}
    aligner = DtwAligner(refine=True, lag_seconds=0.09)  # about tiny.en's lag (docs/alignment.md)
    for dtype in ("float32", "float16"):
        decoder: Any = load_decoder(folder, name=folder.name, dtype=dtype, settings=step_settings())
        on_device = decoder.alignment or device_alignment()
        words: dict[str, list[tuple[str, float, float]]] = {}
        for where, stage in (("device", on_device), ("host", None)):
            decoder.alignment = stage
            service = TranscriptionService(audio=_NoFiles(), decoder=decoder, aligner=aligner, batch_size=8)
            transcript = service.transcribe_waveform(Waveform(samples), TranscribeOptions(temperatures=(0.0,)))
            words[where] = [(w.text, w.start, w.end) for s in transcript.segments for w in s.words]
            if where == "device":
                results[dtype] = {"text": " ".join(s.text.strip() for s in transcript.segments)}
        same_words = [w[0] for w in words["device"]] == [w[0] for w in words["host"]]
        gaps = [max(abs(d[1] - h[1]), abs(d[2] - h[2])) for d, h in zip(words["device"], words["host"]) if same_words]
        results[dtype].update(
            words=[(t, round(s, 2), round(e, 2)) for t, s, e in words["device"]],
            host_words=[(t, round(s, 2), round(e, 2)) for t, s, e in words["host"]],
            device_dtw=f"{getattr(on_device.dtw, '__module__', '')}.{getattr(on_device.dtw, '__name__', '')}",
            same_words_as_host=same_words,
            max_time_difference_s=round(max(gaps, default=0.0), 4),
            words_more_than_a_frame_off=sum(g > 0.02 + 1e-6 for g in gaps),
        )
    return results


class _NoFiles:
    def load(self, path: Path) -> Any:
        raise AssertionError("only in-memory audio here")

    def stream(self, path: Path) -> Any:
        raise AssertionError("only in-memory audio here")
