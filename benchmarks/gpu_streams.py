"""``--engines streams``: whether the next batch's encoder hides in this batch's decoding on a second GPU stream.

At batch 64 the decoder's step is host-bound (the device waits between kernels: ``docs/performance.md`` #72, #93)
and a batch's encoder is a third of its GPU time (#89). Issued between the steps on the same stream (#70, not kept),
the encoder's kernels only lengthened the steps. On a stream of its own the device can run them while the decoder's
stream waits for the host. Measured: three batches decoded back to back (large-v3 shapes, random float16 weights,
word timing on the device), each batch encoded before its decoding (``serial``, today), against each next batch's
encoder queued on a second stream as this batch starts decoding (``side_stream``), alternating, same windows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.gpu_ours import WINDOW_SECONDS, fixed_length_options, random_large_v3, random_windows

BATCHES_IN_A_RUN = 3


def bench_streams(batches: Sequence[int], tokens: int, repeats: int) -> list[dict[str, Any]]:
    decoder = random_large_v3()
    import mlx.core as mx  # noqa: I001

    from onepass_whisper.adapters.mlx.decoder import ENCODER_BATCH
    from onepass_whisper.adapters.mlx.encoder import window_mel
    from onepass_whisper.adapters.mlx.encoder import encode

    options = fixed_length_options(tokens)
    side = mx.new_stream(mx.default_device())
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        windows = random_windows(rng, batch)
        n_mels = decoder.model.dims.n_mels
        mels = [
            mx.stack([window_mel(w.samples, n_mels) for w in windows[start : start + ENCODER_BATCH]]).astype(
                decoder.dtype
            )
            for start in range(0, batch, ENCODER_BATCH)
        ]  # the spectrograms once, for both ways: the encoder is what is compared
        mx.eval(mels)
        languages = ["en"] * batch

        def encoded(stream: Any) -> mx.array:
            with mx.stream(stream):
                return mx.concatenate([encode(decoder.model, part) for part in mels])

        def serial() -> None:
            for _ in range(BATCHES_IN_A_RUN):
                features = encoded(mx.default_stream(mx.default_device()))
                mx.eval(features)
                decoder._decode(features, languages, options, 0.0)

        def side_stream() -> None:
            features = encoded(side)
            mx.eval(features)
            for number in range(BATCHES_IN_A_RUN):
                following = encoded(side) if number < BATCHES_IN_A_RUN - 1 else None
                if following is not None:
                    mx.async_eval(following)  # type: ignore[no-untyped-call]
                decoder._decode(features, languages, options, 0.0)
                if following is not None:
                    features = following

        ways: dict[str, Callable[[], None]] = {"serial": serial, "side_stream": side_stream}
        for way in ways.values():  # warm-up: traces, kernels, pools
            way()
        for repeat in range(max(1, repeats)):
            record: dict[str, Any] = dict(engine="streams", batch=batch, tokens=tokens, repeat=repeat)
            for name in ways if repeat % 2 == 0 else reversed(list(ways)):
                mx.synchronize()
                mx.synchronize(side)
                start = time.perf_counter()
                ways[name]()
                mx.synchronize()
                mx.synchronize(side)
                elapsed = time.perf_counter() - start
                record[f"{name}_s"] = round(elapsed, 3)
                record[f"{name}_realtime"] = round(BATCHES_IN_A_RUN * batch * WINDOW_SECONDS / elapsed, 1)
            record["side_over_serial"] = round(record["side_stream_s"] / record["serial_s"], 3)
            print(json.dumps(record), flush=True)
            results.append(record)
    return results
