"""GPU throughput: our batched decoder on MLX's CUDA backend against PyTorch, at Whisper large-v3 shapes.

Run on the GPU machine (see docs/benchmarks.md, "GPU", for how MLX gets there):

    python -m benchmarks.gpu --engines ours,torch-eager,hf-generate --batches 1,16,64 --json $OUT/gpu.json
    python -m benchmarks.gpu --check-model ~/.cache/onepass-whisper/tiny.en-... --audio samples/sample.wav

Throughput: random float16 weights of large-v3's shapes, every window decodes exactly ``--tokens`` tokens (end of
text suppressed), greedy. Each engine runs in its own process (MLX and PyTorch keep their own GPU memory pools).
- ``ours``: ``MlxWhisperDecoder.decode_batch`` (batched encoder, preallocated KV cache, the timestamp and
  suppression rules, alignment heads' attention captured every step) and then ``DtwAligner`` on every window:
  word timing ON, two ways (``benchmarks/gpu_ours.py``): the reduction and DTW on the device for the whole batch
  (``realtime``, ``realtime_pipelined``), and on the host in numpy (``..._host_alignment``). large-v3's real
  alignment heads (openai-whisper's table) are the ones captured.
- ``torch-eager``: openai-whisper's model code (SDPA), its KV-cache hooks, a plain greedy loop: NO word timing.
- ``hf-generate``: Hugging Face transformers ``generate()`` (SDPA), exactly ``--tokens`` new tokens: NO word timing.
Reported per batch size: encoder ms per window, decoder ms per step, and realtime factor =
windows × 30 s ÷ wall time of the whole batch (encoder + decoding (+ word timing for ours)).

``--engines micro``: a decoder step's parts, each timed alone (either cross-attention, the whole ``_decode`` loop
lagged and synced). ``--engines loop``: the lagged loop against itself with each lever
undone (scores stacked at the read, the greedy pick not compiled, both) and the forward alone with argmax fed back,
alternating, ms a step.
``--engines kernels``: what the CUDA path's custom kernels stand on: the host cost of a graph node by kind, the
kernels' GPU speed against MLX's own ops, and a bare step of ``GraphStep`` against ``KernelStep``.
``--engines trace``: the GPU's own time a step (every kernel, recorded by CUPTI through PyTorch's profiler) in the
lagged loop and in the forward alone: the wall time a step above it is the host's.
``--engines refill``: continuous batching against today's compaction (``benchmarks/refill.py``): windows ending at
the steps a real tiny.en decode of the long-form files took (``benchmarks/longform_token_counts.json``), each batch
size ``--batches`` as the rows kept busy, seconds, steps and distinct step sizes side by side, and the ratio.
``--engines streams``: three batches back to back, each next batch's encoder on a second GPU stream while this one
decodes, against each encoded before its decoding (``benchmarks/gpu_streams.py``).

``--check-model`` is the correctness check of the CUDA path with real weights: it transcribes ``--audio`` with the
given converted model (mlx-whisper layout) and prints the text and word times, to compare with the CPU's, words
timed on the device and on the host (how far apart: ``max_time_difference_s``).

``--smoke``: every engine asked for at a tiny random model (``gpu_ours.SMOKE_SHAPES``), for a run on the CPU
backend before the GPU's: ``python -m benchmarks.gpu --smoke --engines ours --batches 2 --tokens 6 --repeats 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import gpu_ours
from benchmarks.gpu_ours import (
    LARGE_V3,
    SOT_EN_TRANSCRIBE,
    WINDOW_SECONDS,
    bench_ours,
    check_model,
    fixed_length_options,
    random_large_v3,
    random_windows,
)
from benchmarks.gpu_ours import sync_mlx as _sync_mlx
from benchmarks.gpu_streams import bench_streams
from benchmarks.refill import bench_refill


def bench_threads(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    """Two batches decoded on two threads at once against the same two one after the other (no word timing).

    MLX >= 0.31.2 gives each thread its own default stream and command encoder: while the step is host-bound
    (MLX's per-primitive evaluation, ``docs/performance.md`` #22, #54), a second thread could build and launch one
    batch's step while the GPU runs the other's, if MLX's evaluation releases the GIL.
    """
    import threading

    decoder = random_large_v3()
    options = fixed_length_options(tokens)
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        windows = random_windows(rng, batch)
        decoder.decode_batch(windows[: min(batch, 2)], options)  # warm-up on this thread
        for _ in range(repeats):
            _sync_mlx()
            t0 = time.perf_counter()
            for _ in range(2):
                decoder.decode_batch(windows, options)
            t1 = time.perf_counter()
            errors: list[BaseException] = []

            def work() -> None:
                try:
                    decoder.decode_batch(windows, options)
                    _sync_mlx()
                except BaseException as exc:  # noqa: BLE001 - reported in the result, not lost in the thread
                    errors.append(exc)

            threads = [threading.Thread(target=work) for _ in range(2)]
            t2 = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            t3 = time.perf_counter()
            results.append(
                dict(
                    engine="threads",
                    batch=batch,
                    serial_s=t1 - t0,
                    two_threads_s=t3 - t2,
                    realtime_serial=2 * batch * WINDOW_SECONDS / (t1 - t0),
                    realtime_two_threads=2 * batch * WINDOW_SECONDS / (t3 - t2),
                    errors=[repr(e)[:300] for e in errors],
                )
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def bench_micro(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    """Where a decoder step's time goes: each part timed alone (synchronised), summed over the 32 layers."""
    decoder = random_large_v3()
    import mlx.core as mx  # noqa: I001

    from onepass_whisper.adapters.mlx.step.common import gelu
    from onepass_whisper.adapters.mlx.step.factory import HostBackend
    from onepass_whisper.adapters.mlx.step.graph import GraphStep

    options = fixed_length_options(tokens)

    model = decoder.model
    dims = model.dims
    layers, heads, state = dims.n_text_layer, dims.n_text_head, dims.n_text_state
    dh = state // heads

    def timed(f: Any, n: int = 20) -> float:
        mx.eval(f())
        _sync_mlx()
        t0 = time.perf_counter()
        for _ in range(n):
            mx.eval(f())
        _sync_mlx()
        return 1000 * (time.perf_counter() - t0) / n

    results = []
    for batch in batches:
        features = mx.random.normal((batch, dims.n_audio_ctx, state)).astype(mx.float16)
        mx.eval(features)
        steps: dict[str, float] = {}
        fused_layout: tuple[Any, Any] = (None, None)
        for explicit in (False, True):
            decoder_state = GraphStep(model, features, decoder.alignment_heads, explicit_cross=explicit, fused=True)
            logits, _ = decoder_state.step(mx.array([SOT_EN_TRANSCRIBE] * batch))
            mx.eval(logits)
            token = mx.array([[400]] * batch)

            def step() -> Any:
                decoder_state.offset = 3
                out, attention = decoder_state.step(token)
                return out[0], attention

            steps[f"step, {'explicit' if explicit else 'SDPA'} cross"] = timed(step)
            if not explicit:
                fused_layout = decoder_state.cross_kv[0]  # layer 0's K/V as the fused kernel wants them, for below
        device_backend = decoder.backend
        for lagged in (True, False):  # the whole loop of _decode, per step (rules, scores, attention kept)
            decoder.backend = device_backend if lagged else HostBackend(model, decoder.alignment_heads)
            decoder._decode(features, ["en"] * batch, options, 0.0)
            _sync_mlx()
            t0 = time.perf_counter()
            decoder._decode(features, ["en"] * batch, options, 0.0)
            _sync_mlx()
            steps[f"decode loop a step, {'lagged' if lagged else 'synced'}"] = (
                1000 * (time.perf_counter() - t0) / tokens
            )
        decoder.backend = device_backend
        x = mx.random.normal((batch, 1, state)).astype(mx.float16)
        q = mx.random.normal((batch, heads, 1, dh)).astype(mx.float16)
        k, v = fused_layout
        kt = mx.contiguous(k.transpose(0, 1, 3, 2))
        block = model.decoder.blocks[0]
        self_k = mx.random.normal((batch, heads, 64, dh)).astype(mx.float16)
        mx.eval(x, q, kt, self_k)
        parts = {
            **steps,
            "cross SDPA x32": layers * timed(lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=dh**-0.5)),
            "cross explicit (K^T stored) x32": layers
            * timed(lambda: mx.softmax((q * dh**-0.5) @ kt, axis=-1, precise=True) @ v),
            "self SDPA (64 keys) x32": layers
            * timed(lambda: mx.fast.scaled_dot_product_attention(q, self_k, self_k, scale=dh**-0.5)),
            "q,k,v,out + cross q,out projections x32": layers
            * timed(
                lambda: [
                    block.attn.query(x),
                    block.attn.key(x),
                    block.attn.value(x),
                    block.attn.out(x),
                    block.cross_attn.query(x),
                    block.cross_attn.out(x),
                ]
            ),  # fmt: skip
            "MLP x32": layers * timed(lambda: block.mlp2(gelu(block.mlp1(block.mlp_ln(x))))),
            "logits": timed(lambda: model.decoder.token_embedding.as_linear(x)),
            "eval of a tiny op (launch + sync floor)": timed(lambda: x[:, :, :1] + 1),
        }
        record = dict(engine="micro", batch=batch, **{name: round(ms, 3) for name, ms in parts.items()})
        print(json.dumps(record), flush=True)
        results.append(record)
    return results


def bench_kernels(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    """What ``KernelStep`` stands on (docs/performance.md #60-#62), at large-v3's shapes:

    - host µs a graph node costs, by kind: a chain of 200 nodes of one kind on tiny operands, built and evaluated
      (GPU work negligible but for the matmuls' launches); ``built`` is the Python part;
    - the custom kernels' GPU speed against MLX's: the cross-attention of a layer (GB/s of K and V read) and a
      linear of 51200 × 1280 (GB/s of weights), 16 calls queued, the best of 5;
    - a bare decoder step (constant tokens, steps queued with ``async_eval`` as the lagged loop does), either state.
    """
    decoder = random_large_v3()
    import mlx.core as mx  # noqa: I001

    from onepass_whisper.adapters.mlx import cuda_kernels
    from onepass_whisper.adapters.mlx.step.graph import GraphStep
    from onepass_whisper.adapters.mlx.step.kernels import KernelProgram, KernelStep

    model, heads = decoder.model, decoder.alignment_heads
    kernel_program = KernelProgram(model, heads)  # compiled once, as the decoder keeps it: no trace in the timed steps
    unsplit_program = KernelProgram(model, heads, split_cross=False)  # the cross-attention one block a head
    state = model.dims.n_text_state
    results: list[dict[str, Any]] = []

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)
        results.append(record)

    chain = 200
    x = mx.random.normal((1, 1, state)).astype(mx.float16)
    w = (0.03 * mx.random.normal((state, state))).astype(mx.float16)
    zeros, ones = mx.zeros((state,), mx.float16), mx.ones((state,), mx.float16)
    mx.eval(x, w, zeros, ones)
    node_kinds: dict[str, Callable[[Any], Any]] = {
        "add": lambda y: y + x,
        "reshape (no kernel)": lambda y: y.reshape(1, state).reshape(1, 1, state),
        "layer_norm": lambda y: mx.fast.layer_norm(y, ones, zeros, 1e-5),
        "addmm (cuBLAS)": lambda y: mx.addmm(zeros, y, w),
        "custom linear kernel": lambda y: cuda_kernels.linear(y, w, zeros),
    }
    for kind, op in node_kinds.items():
        best, built = 1e9, 0.0
        for _ in range(5):
            _sync_mlx()
            t0 = time.perf_counter()
            y = x
            for _ in range(chain):
                y = op(y)
            t1 = time.perf_counter()
            mx.eval(y)
            _sync_mlx()
            best, built = min(best, time.perf_counter() - t0), t1 - t0
        emit(dict(engine="kernels", part="host us a node", kind=kind, us=round(1e6 * best / chain, 1),
                  built_us=round(1e6 * built / chain, 1)))  # fmt: skip

    def queued(f: Any, n: int = 16) -> float:
        mx.eval(f())
        best = 1e9
        for _ in range(5):
            _sync_mlx()
            t0 = time.perf_counter()
            mx.eval([f() for _ in range(n)])
            _sync_mlx()
            best = min(best, (time.perf_counter() - t0) / n)
        return best

    for batch in batches:
        k = mx.random.normal((batch, model.dims.n_audio_ctx, state)).astype(mx.float16)
        v = mx.random.normal((batch, model.dims.n_audio_ctx, state)).astype(mx.float16)
        q = mx.random.normal((batch, 1, state)).astype(mx.float16)
        split = [mx.contiguous(a.reshape(batch, a.shape[1], 20, -1).transpose(0, 2, 1, 3)) for a in (q, k, v)]
        x = mx.random.normal((batch, 1, state)).astype(mx.float16)
        big = (0.02 * mx.random.normal((51200, state))).astype(mx.float16)
        big_t, bias = big.T, mx.zeros((51200,), mx.float16)
        mx.eval(k, v, q, split, x, big, big_t, bias)
        kv_gb, w_gb = 2 * k.nbytes / 1e9, big.nbytes / 1e9
        cross = queued(lambda: cuda_kernels.cross_attention(q, k, v, 20, (3,))[0])
        counters = mx.zeros((cuda_kernels.CROSS_SPLIT_PAIRS,), mx.uint32)
        cross_split = queued(lambda: cuda_kernels.cross_attention(q, k, v, 20, (3,), counters)[0])
        sdpa = queued(lambda: mx.fast.scaled_dot_product_attention(*split, scale=0.125))
        emit(dict(engine="kernels", part="GPU speed", batch=batch, cross_kernel_gb_s=round(kv_gb / cross),
                  cross_split_gb_s=round(kv_gb / cross_split),
                  cross_splits=cuda_kernels.cross_split_count(batch, 20, model.dims.n_audio_ctx),
                  cross_sdpa_gb_s=round(kv_gb / sdpa)))  # fmt: skip
        if batch <= cuda_kernels.LINEAR_KERNEL_MAX_ROWS or batch == 64:
            kernel = queued(lambda: cuda_kernels.linear(x, big, bias))
            addmm = queued(lambda: mx.addmm(bias, x, big_t))
            emit(dict(engine="kernels", part="GPU speed", batch=batch, linear_kernel_gb_s=round(w_gb / kernel),
                      linear_addmm_gb_s=round(w_gb / addmm)))  # fmt: skip
        del k, v, split, big, big_t
        features = (0.5 * mx.random.normal((batch, model.dims.n_audio_ctx, state))).astype(mx.float16)
        mx.eval(features)
        makers: dict[str, Callable[[], Any]] = {
            "GraphStep": lambda: GraphStep(model, features, heads, explicit_cross=batch >= 16, fused=True),
            "KernelStep": lambda: KernelStep(model, features, kernel_program),
            "KernelStep unsplit": lambda: KernelStep(model, features, unsplit_program),
        }
        for _ in range(max(1, repeats)):
            for name, make in makers.items():  # alternating
                decoder_state = make()
                mx.eval(decoder_state.step(mx.array([SOT_EN_TRANSCRIBE] * batch))[0])
                token = mx.full((batch, 1), 220, mx.int32)
                for _ in range(3):
                    mx.eval(decoder_state.step(token)[0])
                _sync_mlx()
                t0 = time.perf_counter()
                pending: list[Any] = []
                for _ in range(tokens // 2):
                    pending = [*decoder_state.step(token)]
                    mx.async_eval(*pending)  # type: ignore[no-untyped-call]
                mx.eval(pending)
                _sync_mlx()
                ms = 1000 * (time.perf_counter() - t0) / (tokens // 2)
                emit(dict(engine="kernels", part="bare step", batch=batch, state=name, ms_per_step=round(ms, 2)))
                del decoder_state
    return results


def _random_features(decoder: Any, batch: int) -> Any:
    """``batch`` windows' encoder output of random float16 values, evaluated."""
    import mlx.core as mx

    dims = decoder.model.dims
    features = mx.random.normal((batch, dims.n_audio_ctx, dims.n_audio_state)).astype(mx.float16)
    mx.eval(features)
    return features


def _prompted(decoder: Any, features: Any) -> tuple[Any, Any, Any]:
    """A fresh decoder state over ``features`` after the English prompt: the state, the last position's logits and
    the captured attention, evaluated and synchronised."""
    import mlx.core as mx

    state = decoder.backend.new_step(features)  # a GPU's: a DeviceBackend
    prompt = mx.array([SOT_EN_TRANSCRIBE] * features.shape[0])
    logits, attention = state.step(prompt, logit_positions=(2, -1))
    mx.eval(logits, attention)
    _sync_mlx()
    return state, logits[1], attention


def _forward_alone(state: Any, logits: Any, tokens: int) -> None:
    """``tokens`` steps of the forward with each argmax fed back, queued as the lagged loop queues them (no rules,
    no scores), then synchronised."""
    import mlx.core as mx

    for _ in range(tokens):
        logits_list, attention = state.step(mx.argmax(logits, axis=-1)[:, None])
        logits = logits_list[0]
        mx.async_eval(logits, attention)  # type: ignore[no-untyped-call]
    _sync_mlx()


def bench_loop(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    """Where ``_decode``'s time goes besides the forward, ms a step: the lagged loop as it is, and with each of its
    levers undone in turn (the steps' scores stacked at the read instead of ahead, ``LaggedReads``; the greedy pick
    not compiled; both, the loop before issue 24's item 2), beside the forward alone, alternating."""
    decoder = random_large_v3()
    from onepass_whisper.adapters.mlx.loop import BatchResults, LaggedReads, decode_lagged
    from onepass_whisper.adapters.mlx.step.factory import DeviceBackend

    if not isinstance(decoder.backend, DeviceBackend):  # the CPU's smoke run: the device's loop on MLX's CPU
        decoder.backend = DeviceBackend(decoder.model, decoder.alignment_heads, gpu=False)

    rules = decoder._rules(fixed_length_options(tokens))
    compiled_pick = rules._pick
    results = []
    for batch in batches:
        features = _random_features(decoder, batch)

        def lagged_loop_ms(ahead: bool, compiled: bool) -> float:
            """The lagged loop over a fresh state and prompt, ms a step (the state and prompt not counted)."""
            state, logits, attention = _prompted(decoder, features)
            rules._pick = compiled_pick if compiled else rules._pick_later
            try:
                t0 = time.perf_counter()
                outcome = BatchResults(batch, rules.eot, tokens, rows_on_device=True)
                decode_lagged(state, rules, logits, attention, outcome, 0.0, reads=LaggedReads(ahead=ahead))
                _sync_mlx()
                return 1000 * (time.perf_counter() - t0) / tokens
            finally:
                rules._pick = compiled_pick

        def forward_alone_ms() -> float:
            state, logits, _ = _prompted(decoder, features)
            t0 = time.perf_counter()
            _forward_alone(state, logits, tokens)
            return 1000 * (time.perf_counter() - t0) / tokens

        variants: dict[str, Callable[[], float]] = {
            "lagged_loop": lambda: lagged_loop_ms(True, True),
            "reads_stacked_at_read": lambda: lagged_loop_ms(False, True),
            "pick_not_compiled": lambda: lagged_loop_ms(True, False),
            "loop_before": lambda: lagged_loop_ms(False, False),
            "forward_argmax_only": forward_alone_ms,
        }
        for repeat in range(max(2, repeats) + 1):  # the first warms up (the traces of each batch size)
            record: dict[str, Any] = dict(engine="loop", batch=batch, tokens=tokens, repeat=repeat)
            order = list(variants) if repeat % 2 else list(reversed(variants))
            for name in order:
                record[f"{name}_ms_per_step"] = round(variants[name](), 3)
            if repeat:
                print(json.dumps(record), flush=True)
                results.append(record)
    return results


def bench_trace(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    """The GPU's side of the lagged loop and of the forward alone: every kernel MLX launches, recorded by CUPTI
    through PyTorch's profiler (same process, same device), summed a step. "Slow small kernels": MLX's own
    elementwise, copy and reduction kernels that took over 40 µs; at these sizes that is waiting, not work
    (``docs/performance.md`` #72 found them next to the host's reads through managed memory)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    decoder = random_large_v3()
    from onepass_whisper.adapters.mlx.loop import BatchResults, decode_lagged

    torch.zeros(1, device="cuda")  # PyTorch's CUDA context (the device's primary one, which MLX uses too)
    rules = decoder._rules(fixed_length_options(tokens))
    ours = ("onepass", "nvjet", "cutlass", "cudnn", "gemm", "splitK")  # kernels with real work a step
    results = []
    for batch in batches:
        features = _random_features(decoder, batch)

        def lagged_loop() -> None:
            state, logits, attention = _prompted(decoder, features)
            decode_lagged(state, rules, logits, attention, BatchResults(batch, rules.eot, tokens), 0.0)
            _sync_mlx()

        def forward_alone() -> None:
            state, logits, _ = _prompted(decoder, features)
            _forward_alone(state, logits, tokens)

        for name, run in (("lagged loop", lagged_loop), ("forward alone", forward_alone)):
            run()  # warm-up
            with profile(activities=[ProfilerActivity.CUDA]) as profiler:
                run()
            with tempfile.TemporaryDirectory() as folder:  # the trace as chrome://tracing JSON: "X" events, µs
                profiler.export_chrome_trace(f"{folder}/trace.json")
                events = json.loads(Path(f"{folder}/trace.json").read_text(encoding="utf-8"))["traceEvents"]
            kinds = ("kernel", "gpu_memcpy", "gpu_memset")
            gpu_us = [(e["name"], float(e["dur"])) for e in events if e.get("ph") == "X" and e.get("cat") in kinds]
            slow = sum(us for kernel, us in gpu_us if us > 40 and not any(k in kernel for k in ours))
            by_name: dict[str, list[float]] = {}
            for kernel, us in gpu_us:
                by_name.setdefault(kernel[:80], []).append(us)
            top = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:10]
            record = dict(
                engine="trace",
                batch=batch,
                tokens=tokens,
                run=name,
                kernels_per_step=round(len(gpu_us) / tokens, 1),
                gpu_ms_per_step=round(sum(us for _, us in gpu_us) / 1000 / tokens, 3),
                slow_small_kernels_ms_per_step=round(slow / 1000 / tokens, 3),
                # the kernels that take the most GPU time: name -> [ms a step, launches a step]
                top_kernels={k: [round(sum(us) / 1000 / tokens, 3), round(len(us) / tokens, 1)] for k, us in top},
            )
            print(json.dumps(record), flush=True)
            results.append(record)
    return results


def bench_torch_eager(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    with torch.device("cuda"):  # random init on the GPU: seconds, not a minute on the host
        model = Whisper(ModelDimensions(**LARGE_V3)).half().eval()
    for module in model.modules():  # openai-whisper's LayerNorm computes in float32 and wants float32 weights
        if isinstance(module, torch.nn.LayerNorm):
            module.float()
    results = []
    for batch in batches:
        mel = torch.randn(batch, LARGE_V3["n_mels"], 3000, device="cuda", dtype=torch.float16)

        def run(batch_mel: torch.Tensor, steps: int) -> tuple[float, float]:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            audio = model.encoder(batch_mel)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            sequence = torch.tensor([SOT_EN_TRANSCRIBE] * batch_mel.shape[0], device="cuda")
            cache, hooks = model.install_kv_cache_hooks()
            try:
                step_tokens = sequence
                for _ in range(steps):
                    logits = model.decoder(step_tokens, audio, kv_cache=cache)
                    chosen = logits[:, -1].argmax(-1, keepdim=True)
                    sequence = torch.cat([sequence, chosen], dim=1)
                    step_tokens = chosen
            finally:
                for hook in hooks:
                    hook.remove()
            torch.cuda.synchronize()
            return t1 - t0, time.perf_counter() - t1

        with torch.inference_mode():
            run(mel[: min(batch, 2)], 4)
            for _ in range(repeats):
                encode, decode = run(mel, tokens)
                results.append(
                    dict(
                        engine="torch-eager",
                        batch=batch,
                        tokens=tokens,
                        encoder_ms_per_window=1000 * encode / batch,
                        decoder_ms_per_step=1000 * decode / tokens,
                        realtime=batch * WINDOW_SECONDS / (encode + decode),
                    )
                )
                print(json.dumps(results[-1]), flush=True)
    return results


def bench_hf_generate(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    import torch
    from transformers import GenerationMixin, WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    d = LARGE_V3
    config = WhisperConfig(
        vocab_size=d["n_vocab"],
        num_mel_bins=d["n_mels"],
        d_model=d["n_audio_state"],
        encoder_layers=d["n_audio_layer"],
        decoder_layers=d["n_text_layer"],
        encoder_attention_heads=d["n_audio_head"],
        decoder_attention_heads=d["n_text_head"],
        encoder_ffn_dim=4 * d["n_audio_state"],
        decoder_ffn_dim=4 * d["n_text_state"],
        max_source_positions=d["n_audio_ctx"],
        max_target_positions=d["n_text_ctx"],
        eos_token_id=50257,
        pad_token_id=50257,
        decoder_start_token_id=50258,
    )
    with torch.device("cuda"):
        model = WhisperForConditionalGeneration._from_config(config, attn_implementation="sdpa").half().eval()
    results = []
    for batch in batches:
        mel = torch.randn(batch, d["n_mels"], 3000, device="cuda", dtype=torch.float16)
        prompt = torch.tensor([SOT_EN_TRANSCRIBE] * batch, device="cuda")

        def run(batch_mel: torch.Tensor, batch_prompt: torch.Tensor, steps: int) -> float:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            # the generic generate(): Whisper's own override wants a real generation config (languages, tasks)
            GenerationMixin.generate(
                model,
                input_features=batch_mel,
                decoder_input_ids=batch_prompt,
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                num_beams=1,
            )
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        with torch.inference_mode():
            run(mel[: min(batch, 2)], prompt[: min(batch, 2)], 4)
            for _ in range(repeats):
                wall = run(mel, prompt, tokens)
                results.append(
                    dict(
                        engine="hf-generate",
                        batch=batch,
                        tokens=tokens,
                        decoder_ms_per_step=1000 * wall / tokens,  # encoder included
                        realtime=batch * WINDOW_SECONDS / wall,
                    )
                )
                print(json.dumps(results[-1]), flush=True)
    return results


def table(lines: Sequence[str]) -> str:
    """Markdown table of a ``--json`` file: per engine and batch, the best repeat (the first one warms up)."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for line in lines:
        record = json.loads(line)
        if "realtime" not in record:  # the correctness check, the micro-benchmark
            continue
        key = (record["engine"], record["batch"])
        if key not in best or record["realtime"] > best[key]["realtime"]:
            best[key] = record
    rows = [
        "| engine | word timing | batch | encoder ms / window | decoder ms / step | × realtime | × realtime, "
        "timing overlapped |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (engine, batch), r in sorted(best.items(), key=lambda item: (item[0][0] != "ours", item[0])):
        encoder = f"{r['encoder_ms_per_window']:.1f}" if "encoder_ms_per_window" in r else "(in step)"
        pipelined = f"{r['realtime_pipelined']:.0f}" if "realtime_pipelined" in r else ""
        timing = r.get("word_timing", "host") if engine == "ours" else "no"
        step = f"{r['decoder_ms_per_step']:.1f}"
        rows.append(f"| {engine} | {timing} | {batch} | {encoder} | {step} | {r['realtime']:.0f} | {pipelined} |")
        if "realtime_host_alignment" in r:  # the same run's host-side word timing, for comparison
            host_pipelined = f"{r['realtime_pipelined_host_alignment']:.0f}"
            rows.append(
                f"| {engine} | host | {batch} | {encoder} | {step} | {r['realtime_host_alignment']:.0f} | "
                f"{host_pipelined} |"
            )
    return "\n".join(rows)


ENGINES = {
    "micro": bench_micro,
    "loop": bench_loop,
    "kernels": bench_kernels,
    "trace": bench_trace,
    "ours": bench_ours,
    "threads": bench_threads,
    "torch-eager": bench_torch_eager,
    "hf-generate": bench_hf_generate,
    "refill": bench_refill,
    "streams": bench_streams,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="ours,torch-eager,hf-generate")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="append each result as a JSON line to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--check-model", type=Path, help="converted model folder: correctness check with real weights")
    parser.add_argument("--audio", type=Path, default=Path("samples/sample.wav"))
    parser.add_argument("--table", type=Path, help="print the markdown table of a --json file and exit")
    parser.add_argument("--smoke", action="store_true", help="a tiny random model: the code path, on any backend")
    parser.add_argument(
        "--align-processes",
        type=int,
        default=None,
        help="ours: word timing overlapped on this many worker processes (0: threads); default: the container's choice",
    )
    args = parser.parse_args(argv)
    if args.align_processes is None:  # as the container chooses on a machine of more than 2 cores
        from onepass_whisper.application.word_timing import default_align_processes

        gpu_ours.ALIGN_PROCESSES = default_align_processes()
    else:
        gpu_ours.ALIGN_PROCESSES = args.align_processes
    if args.smoke:
        gpu_ours.use_smoke_shapes()
    if args.table:
        print(table(args.table.read_text(encoding="utf-8").splitlines()))
        return
    if args.check_model:
        result = check_model(args.check_model, args.audio)
        print(json.dumps(result, indent=1))
        if args.json:
            with open(args.json, "a", encoding="utf-8") as out:
                out.write(json.dumps({"check": result}) + "\n")
        return
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        results = ENGINES[args.worker](batches, args.tokens, args.repeats)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as out:
                for result in results:
                    out.write(json.dumps(result) + "\n")
        return
    for engine in args.engines.split(","):  # one process per engine: separate GPU memory pools
        command = [sys.executable, "-m", "benchmarks.gpu", "--worker", engine, "--batches", args.batches]
        command += ["--tokens", str(args.tokens), "--repeats", str(args.repeats)]
        command += ["--align-processes", str(gpu_ours.ALIGN_PROCESSES)] + (["--smoke"] if args.smoke else [])
        if args.json:
            command += ["--json", args.json]
        code = subprocess.call(command, env=os.environ.copy())
        if code:
            print(f"{engine}: exited with {code}", file=sys.stderr)


if __name__ == "__main__":
    main()
