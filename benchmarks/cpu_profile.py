"""Where a transcription's wall time goes: encoder, decoding loop, word timing (summed over calls).

    PYTHONPATH=. .venv/bin/python -m benchmarks.cpu_profile [FILES...]   # default: the long-form eval files

Wraps ``MlxWhisperDecoder._encode`` (with its MLX evaluation), ``MlxWhisperDecoder._decode`` and
``DtwAligner.align`` with timers and runs the service as ``app transcribe`` does (tiny.en, batch 16). Word timing
runs on a thread pool beside decoding, so its sum overlaps the others'.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_FILES = sorted((Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "longform").glob("*.wav"))


def main(argv: list[str]) -> None:
    import onepass_whisper.adapters.dtw.aligner as aligner_module
    from onepass_whisper.adapters.mlx import bootstrap

    bootstrap()  # first: the fast BLAS before MLX binds its own
    import mlx.core as mx  # noqa: I001

    import onepass_whisper.adapters.mlx.decoder as decoder_module
    from onepass_whisper.domain.model import TranscribeOptions
    from onepass_whisper.entrypoints.container import Container

    totals = {"encoder": 0.0, "decoding": 0.0, "word timing": 0.0}

    def timed(cls: type, name: str, key: str) -> None:
        inner: Callable[..., Any] = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = inner(*args, **kwargs)
            if key == "encoder":
                mx.eval(result)
            totals[key] += time.perf_counter() - start
            return result

        setattr(cls, name, wrapper)

    timed(decoder_module.MlxWhisperDecoder, "_encode", "encoder")
    timed(decoder_module.MlxWhisperDecoder, "_decode", "decoding")
    timed(aligner_module.DtwAligner, "align", "word timing")
    files = [Path(a) for a in argv] or DEFAULT_FILES
    service = Container().service()
    start = time.perf_counter()
    for _ in service.transcribe_many(files, TranscribeOptions()):
        pass
    wall = time.perf_counter() - start
    print(f"wall {wall:.1f} s: " + ", ".join(f"{k} {v:.1f} s ({100 * v / wall:.0f} %)" for k, v in totals.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
