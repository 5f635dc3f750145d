"""Word timing's reduction and DTW for a batch: the host's numpy per window against the device stage for the whole
batch (``adapters/mlx/alignment.py``) on MLX's default device (the CPU's here: the MLX-op DTW).

Run: ``.venv/bin/python -m benchmarks.device_alignment_speed [--batch 16] [--heads 8] [--tokens 100]`` (tiny.en's
8 alignment heads by default; large-v3 has 10). Random raw QK with a diagonal ridge, 1500 frames a window, float32
rows (the CPU decoder's). Prints best-of wall times: the host's ``token_frames`` over the batch's windows, one
after the other, and the device stage for the whole batch, with the stage's parts (the reduction alone, then the
DTW), and how many rows' frames differ between the two (near-ties of float32 sums in another order).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np

from onepass_whisper.adapters.mlx import bootstrap

bootstrap()
import mlx.core as mx  # noqa: E402

from onepass_whisper.adapters.dtw import token_frames  # noqa: E402
from onepass_whisper.adapters.mlx import alignment  # noqa: E402

FRAMES = 1500


def best(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = args.tokens + 1
    ridge = -0.02 * (np.arange(FRAMES)[None, :] - np.linspace(0, FRAMES - 1, rows)[:, None]) ** 2
    captured = (4.0 * rng.standard_normal((rows, args.batch, args.heads, FRAMES)) + ridge[:, None, None, :]).astype(
        np.float32
    )  # steps × batch × heads × frames, as the loop keeps them
    windows = [np.ascontiguousarray(captured[:, b].transpose(1, 0, 2)) for b in range(args.batch)]
    sequences = [alignment.AlignedRows(b, tuple(range(rows)), FRAMES) for b in range(args.batch)]
    on_device = mx.array(captured)
    mx.eval(on_device)
    sizes = mx.array(np.array([(rows, FRAMES)] * args.batch, np.int32))

    host = [token_frames(w, 7) for w in windows]
    device = alignment.token_frames(on_device, sequences, 7)
    gaps = np.concatenate([np.abs(h.astype(np.int64) - d) for h, d in zip(host, device)])

    def reduction() -> None:
        attention = on_device.transpose(1, 2, 0, 3)
        mx.eval(alignment.attention_matrices(attention, sizes, 7))

    matrix = alignment.attention_matrices(on_device.transpose(1, 2, 0, 3), sizes, 7)
    mx.eval(matrix)
    host_s = best(lambda: [token_frames(w, 7) for w in windows], args.repeats)
    device_s = best(lambda: alignment.token_frames(on_device, sequences, 7), args.repeats)
    reduction_s = best(reduction, args.repeats)
    dtw_s = best(lambda: mx.eval(alignment.dtw_first_frames(-matrix, sizes)), args.repeats)
    print(
        f"device {mx.default_device()}, batch {args.batch} × {args.heads} heads × {rows} rows × {FRAMES} frames: "
        f"host {host_s:.3f} s ({1000 * host_s / args.batch:.1f} ms a window), device stage {device_s:.3f} s "
        f"(reduction {reduction_s:.3f}, DTW {dtw_s:.3f}); rows whose frame differs: {int((gaps > 0).sum())} of "
        f"{gaps.size}, by at most {int(gaps.max())} frames"
    )


if __name__ == "__main__":
    main()
