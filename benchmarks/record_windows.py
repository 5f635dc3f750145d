"""Decode an evaluation folder once and keep every decoded window (attention, words, samples) in a pickle, so that
word-timing ideas can be measured offline on the same words (issue 23: ``docs/alignment.md``).

    PYTHONPATH=. .venv/bin/python -m benchmarks.record_windows ../shared/data/eval/timit_dev /tmp/timit-base.pkl \\
        --model base --language en

The pickle holds ``{"refs": [Reference], "files": [str], "chunks": [DecodedChunk], "heads": [(layer, head)],
"alignment_heads": [(layer, head)]}``; a chunk's ``window.source`` indexes ``refs`` and ``files``, its attention's
heads are ``heads`` (the model's alignment heads, or with ``--all-heads`` every head of every decoder layer, as the
single-pass decoder captures them when told to: the decoding, and so the words, are the same either way). Re-aligning every chunk with ``DtwAligner(refine=True, lag_seconds=...)`` and scoring
with ``application.evaluation.score_corpus`` gives ``app eval``'s numbers for the same decoding (a window whose
decoding fell back to sampling is decoded once, not again). Several MB a minute of audio: keep it outside the
repository.
"""

from __future__ import annotations

import argparse
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path

from attrs import define, field
from dependency_injector import providers

from onepass_whisper.domain.audio import DecodedChunk
from onepass_whisper.domain.model import TranscribeOptions, Word
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.eval_command import read_corpus


@define
class _Recorder:
    """An aligner that keeps each window and times no word."""

    chunks: list[DecodedChunk] = field(factory=list)
    lock: threading.Lock = field(factory=threading.Lock)

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        with self.lock:
            self.chunks.append(chunk)
        return tuple(() for _ in chunk.segments)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--language", default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many utterances per folder")
    parser.add_argument("--all-heads", action="store_true", help="capture every head of every decoder layer")
    args = parser.parse_args(argv)
    corpus = read_corpus(args.dataset, limit=args.limit)
    recorder = _Recorder()
    container = Container()
    container.config.model.from_value(args.model)
    container.config.align_processes.from_value(0)  # the windows are kept in this process
    container.aligner.override(providers.Object(recorder))
    decoder = container.decoder()
    alignment_heads = list(getattr(decoder, "alignment_heads", []))
    heads = alignment_heads
    if args.all_heads:
        from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder

        dims = decoder.model.dims  # type: ignore[attr-defined]
        heads = [(layer, head) for layer in range(dims.n_text_layer) for head in range(dims.n_text_head)]
        decoder = MlxWhisperDecoder(decoder.model, args.model, alignment_heads=heads)  # type: ignore[attr-defined]
        container.decoder.override(providers.Object(decoder))
    files = [u.audio for u in corpus]
    for _ in container.service().transcribe_many(files, TranscribeOptions(language=args.language)):
        pass
    record = {
        "refs": [u.reference for u in corpus],
        "files": [str(f) for f in files],
        "chunks": recorder.chunks,
        "heads": heads,
        "alignment_heads": alignment_heads,
    }
    with args.output.open("wb") as out:
        pickle.dump(record, out)
    print(f"{len(recorder.chunks)} windows of {len(files)} files -> {args.output}")


if __name__ == "__main__":
    main()
