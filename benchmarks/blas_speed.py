"""MLX's Linux CPU backend with the wheel's reference BLAS against the optimized one that ``enable_fast_blas`` loads.

Run: ``PYTHONPATH=. .venv/bin/python -m benchmarks.blas_speed`` (a few minutes: the reference BLAS is slow). Each
configuration runs in its own subprocess (the BLAS is chosen once per process, before ``mlx`` is imported), in
alternating order when ``--repeats`` > 1; the best run of each is printed side by side:

- a 1024² float32 matmul (best of ``--matmul-repeats``), in GFLOP/s, and its largest error against a float64 numpy
  product relative to the largest entry;
- the encoder of a random-weight Whisper tiny (4 layers, 384 wide, float32) on a batch of 4 mel windows of 30 s
  (after one warm-up on a single window; best of ``--encoder-repeats``), in seconds;
- numpy's own matmul on the same matrices, for scale.

``--threads 1,2`` adds one optimized run per OPENBLAS_NUM_THREADS value. Wall-clock times: use an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

REPO = Path(__file__).resolve().parent.parent
SIZE = 1024  # matmul side
BATCH = 4  # mel windows in the encoder batch
MEL_FRAMES = 3000  # 30 s at 100 frames per second


class Measured(TypedDict):
    loaded: str | None
    failure: str | None
    matmul_gflops: float
    matmul_error: float
    numpy_gflops: float
    encoder_s: float


def best_time(function: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        timings.append(time.perf_counter() - began)
    return min(timings)


def measure(matmul_repeats: int, encoder_repeats: int) -> Measured:
    """In this (fresh) process: choose the BLAS, then time MLX."""
    from onepass_whisper.adapters.mlx.blas import enable_fast_blas, fast_blas_failure

    loaded = enable_fast_blas()

    import mlx.core as mx
    import numpy as np
    from mlx_whisper.whisper import ModelDimensions, Whisper

    rng = np.random.default_rng(0)
    a = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    b = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    ma, mb = mx.array(a), mx.array(b)
    product = ma @ mb
    mx.eval(product)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    error = float(np.max(np.abs(np.array(product) - exact)) / np.max(np.abs(exact)))
    flops = 2 * SIZE**3
    matmul_s = best_time(lambda: mx.eval(ma @ mb), matmul_repeats)
    numpy_s = best_time(lambda: a @ b, matmul_repeats)

    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
        n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4,
    )  # fmt: skip
    model = Whisper(dims, dtype=mx.float32)
    mx.eval(model.parameters())
    mel = mx.array(rng.standard_normal((BATCH, MEL_FRAMES, dims.n_mels), dtype=np.float32))  # batch × frames × mels
    mx.eval(model.encoder(mel[:1]))  # warm-up
    encoder_s = best_time(lambda: mx.eval(model.encoder(mel)), encoder_repeats)
    return Measured(
        loaded=loaded,
        failure=fast_blas_failure(),
        matmul_gflops=flops / matmul_s / 1e9,
        matmul_error=error,
        numpy_gflops=flops / numpy_s / 1e9,
        encoder_s=encoder_s,
    )


def spawn(env: dict[str, str], args: argparse.Namespace) -> Measured:
    command = [sys.executable, "-m", "benchmarks.blas_speed", "--worker"]
    command += ["--matmul-repeats", str(args.matmul_repeats), "--encoder-repeats", str(args.encoder_repeats)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": path, **env}, cwd=REPO, capture_output=True, text=True, check=True
    )
    result: Measured = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.matmul_repeats, args.encoder_repeats)))
        return
    configurations: list[tuple[str, dict[str, str]]] = [("reference BLAS", {"ONEPASS_BLAS": "off"}), ("fast BLAS", {})]
    configurations += [(f"fast, {n} thr.", {"OPENBLAS_NUM_THREADS": n}) for n in filter(None, args.threads.split(","))]
    runs: dict[str, list[Measured]] = {label: [] for label, _ in configurations}
    for repeat in range(args.repeats):
        order = configurations if repeat % 2 == 0 else configurations[::-1]
        for label, env in order:
            runs[label].append(spawn(env, args))
            print(f"  ran {label} ({repeat + 1}/{args.repeats})", file=sys.stderr)

    best = {label: _best(measured) for label, measured in runs.items()}
    reference = best["reference BLAS"]
    width = 20
    print(f"MLX CPU backend, best of {args.repeats} process(es) each ({os.cpu_count()} CPUs):")
    print(f"{'':<34}" + "".join(f"{label:>{width}}" for label in best))
    rows: list[tuple[str, Callable[[Measured], str]]] = [
        (f"matmul {SIZE}² f32, GFLOP/s", lambda m: f"{m['matmul_gflops']:.1f}"),
        ("  max error / max |entry|", lambda m: f"{m['matmul_error']:.1e}"),
        ("  numpy's own matmul, GFLOP/s", lambda m: f"{m['numpy_gflops']:.1f}"),
        (f"tiny encoder, batch {BATCH}, s", lambda m: f"{m['encoder_s']:.2f}"),
        ("  speed-up", lambda m: f"{reference['encoder_s'] / m['encoder_s']:.1f}×"),
    ]
    for name, cell in rows:
        print(f"{name:<34}" + "".join(f"{cell(m):>{width}}" for m in best.values()))
    for label, m in best.items():
        print(
            f"{label}: {m['loaded'] or 'the wheel’s own BLAS'}" + (f" (failed: {m['failure']})" if m["failure"] else "")
        )


def _best(measured: Sequence[Measured]) -> Measured:
    fastest = min(measured, key=lambda m: m["encoder_s"])
    return Measured(
        loaded=fastest["loaded"],
        failure=fastest["failure"],
        matmul_gflops=max(m["matmul_gflops"] for m in measured),
        matmul_error=max(m["matmul_error"] for m in measured),
        numpy_gflops=max(m["numpy_gflops"] for m in measured),
        encoder_s=fastest["encoder_s"],
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="processes per configuration (default 1)")
    parser.add_argument("--matmul-repeats", type=int, default=10)
    parser.add_argument("--encoder-repeats", type=int, default=2)
    parser.add_argument("--threads", default="", help="comma-separated OPENBLAS_NUM_THREADS values to add")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main()
