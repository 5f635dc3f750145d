"""The use case: transcribe many inputs, their windows sharing decoder batches, with word times from one pass."""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from attrs import define, field, frozen
from numpy.typing import NDArray

from domain.audio import SAMPLE_RATE, DecodedChunk, Waveform, Window
from domain.errors import AudioLoadError, TranscriptionError
from domain.model import Segment, TranscribeOptions, Transcript
from domain.ports import Aligner, AudioSource, Decoder, ProgressSink
from domain.windowing import split_into_windows


CONTINUE_SECONDS = 1.0  # heuristic: less than a second left after the last segment holds no more than a word or two


def _no_progress(done: int, total: int) -> None:
    """The default progress sink: says nothing."""


@frozen
class FileResult:
    """One input's outcome: a transcript or the error that stopped it (never both)."""

    source: Path | str
    transcript: Transcript | None = None
    error: TranscriptionError | None = None


def default_align_workers() -> int:
    """Threads that time words while the decoder goes on: every core but the one the decoder's thread keeps busy."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@define
class _Pending:
    """An input whose windows are being decoded; each decoded window's words are being timed in the background."""

    source: Path | str
    duration: float
    windows_left: int
    languages: list[str] = field(factory=list)  # of the windows that hold text
    first_language: str | None = None
    timed: list[tuple[float, Future[list[Segment]]]] = field(factory=list)  # (window offset, its segments)

    def done(self) -> bool:
        return self.windows_left == 0 and all(future.done() for _, future in self.timed)


@define
class TranscriptionService:
    audio: AudioSource
    decoder: Decoder
    aligner: Aligner
    batch_size: int = 8
    align_workers: int = field(factory=default_align_workers)  # word timing overlaps the next batch's decoding

    def transcribe(self, path: Path, options: TranscribeOptions) -> Transcript:
        """One file; raises the ``TranscriptionError`` that stopped it."""
        return _unwrap(next(self.transcribe_many([path], options)))

    def transcribe_waveform(self, waveform: Waveform, options: TranscribeOptions, name: str = "<array>") -> Transcript:
        """Samples already in memory (16 kHz mono float32)."""
        return _unwrap(next(self._run([(name, waveform)], options, _no_progress)))

    def transcribe_many(
        self, paths: Sequence[Path], options: TranscribeOptions, progress: ProgressSink = _no_progress
    ) -> Iterator[FileResult]:
        """Yield each input's result as soon as its last window is decoded; a bad input never stops the others.

        Windows of consecutive inputs share batches. Inputs are read lazily, only as far as the next batch needs.
        """
        return self._run(((path, None) for path in paths), options, progress)

    def _run(
        self,
        inputs: Iterator[tuple[Path | str, Waveform | None]] | list[tuple[Path | str, Waveform | None]],
        options: TranscribeOptions,
        progress: ProgressSink,
    ) -> Iterator[FileResult]:
        with ThreadPoolExecutor(max_workers=max(1, self.align_workers), thread_name_prefix="align") as pool:
            yield from self._pipeline(inputs, options, progress, pool)

    def _pipeline(
        self,
        inputs: Iterator[tuple[Path | str, Waveform | None]] | list[tuple[Path | str, Waveform | None]],
        options: TranscribeOptions,
        progress: ProgressSink,
        pool: Executor,
    ) -> Iterator[FileResult]:
        """Decode batch after batch; a decoded window's words are timed on ``pool`` while the next batch decodes.

        A window's captured attention lives only until its words are timed. Inputs are yielded in the order their
        last windows finish, each once its words are all timed.
        """
        queue: deque[Window] = deque()
        pending: dict[int, _Pending] = {}
        finished: list[_Pending] = []  # decoded, words possibly still being timed
        source_iter = enumerate(inputs)
        exhausted = False
        done = total = 0
        while True:
            while not exhausted and len(queue) < self.batch_size:
                try:
                    number, (source, waveform) = next(source_iter)
                except StopIteration:
                    exhausted = True
                    break
                try:
                    if waveform is None:
                        assert isinstance(source, Path)
                        waveform = self.audio.load(source)
                    windows = split_into_windows(_finite(waveform.samples), source=number)
                except AudioLoadError as exc:
                    yield FileResult(source, error=exc)
                    continue
                if not windows:
                    yield FileResult(source, error=AudioLoadError(str(source), "no samples"))
                    continue
                pending[number] = _Pending(source, waveform.duration, len(windows))
                queue.extend(windows)
                total += len(windows)
                progress(done, total)
            if not queue:
                break
            batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            for chunk in self.decoder.decode_batch(batch, options):
                entry = pending[chunk.window.source]
                entry.first_language = entry.first_language or chunk.language
                if chunk.segments:
                    entry.languages.append(chunk.language)
                rest = _undecoded_tail(chunk)
                if rest is None:
                    timed = pool.submit(self._segments, chunk, options, entry.duration)
                else:  # timed now: the tail starts where the window's last word ends, which only the words say
                    timed = Future()
                    timed.set_result(self._segments(chunk, options, entry.duration))
                    rest = _after_words(rest, chunk.window, timed.result())
                entry.timed.append((chunk.window.offset, timed))
                if rest is not None:  # decoded again, first thing in the next batch
                    queue.appendleft(rest)
                    entry.windows_left += 1
                    total += 1
            for window in batch:
                entry = pending[window.source]
                entry.windows_left -= 1
                if entry.windows_left == 0:
                    del pending[window.source]
                    finished.append(entry)
            done += len(batch)
            progress(done, total)
            while finished and finished[0].done():
                yield self._result(finished.pop(0), options)
        for entry in finished:  # the last words being timed
            yield self._result(entry, options)

    def _result(self, entry: _Pending, options: TranscribeOptions) -> FileResult:
        segments: list[Segment] = []
        for _, future in sorted(entry.timed, key=lambda item: item[0]):
            segments.extend(future.result())
        languages = Counter(entry.languages)
        language = languages.most_common(1)[0][0] if languages else (options.language or entry.first_language or "en")
        transcript = Transcript(segments=segments, language=language, duration=entry.duration, model=self.decoder.name)
        return FileResult(entry.source, transcript=transcript)

    def _segments(self, chunk: DecodedChunk, options: TranscribeOptions, duration: float) -> list[Segment]:
        offset = chunk.window.offset
        aligned = self.aligner.align(chunk) if options.word_timestamps else tuple(() for _ in chunk.segments)
        segments = []
        for decoded, words in zip(chunk.segments, aligned):
            file_words = tuple(word.shifted(offset) for word in words)
            start = min(offset + decoded.start, duration)
            end = min(max(offset + decoded.end, start), duration)
            if file_words:  # as openai-whisper: with word times, a segment spans its words
                start, end = file_words[0].start, file_words[-1].end
            segments.append(
                Segment(
                    start=start,
                    end=end,
                    text=decoded.text,
                    words=file_words,
                    avg_logprob=chunk.avg_logprob,
                    compression_ratio=chunk.compression_ratio,
                    no_speech_prob=chunk.no_speech_prob,
                    temperature=chunk.temperature,
                )
            )
        return segments


def _undecoded_tail(chunk: DecodedChunk) -> Window | None:
    """The end of ``chunk``'s window that the model left undecoded, as a window of its own; None if there is none.

    Whisper may stop early, at a timestamp well before the window's end, although speech goes on; sequential
    transcription then seeks to that timestamp and decodes from there. Windows here are decoded in parallel, so the
    rest becomes a new window. As openai-whisper's ``transcribe``: not when the output ended with a lone timestamp
    (the model said the speech ended: on silence, decoding the rest again only repeats a hallucination), and only
    after progress (the last segment ends after the window's start), so this always ends.
    """
    if not chunk.segments or chunk.speech_ended:
        return None
    end = chunk.segments[-1].end
    if end <= 0.0 or chunk.window.duration - end < CONTINUE_SECONDS:
        return None
    return _window_from(chunk.window, end)


def _after_words(tail: Window, window: Window, segments: Sequence[Segment]) -> Window | None:
    """``tail`` moved to start after the window's last timed word (file times), as whisper does with word times."""
    ends = [word.end for segment in segments for word in segment.words]
    start = max([tail.offset, *ends]) - window.offset
    if window.duration - start < CONTINUE_SECONDS:
        return None
    return _window_from(window, start)


def _window_from(window: Window, start: float) -> Window:
    """The rest of ``window`` from ``start`` seconds into it."""
    cut = int(round(start * SAMPLE_RATE))
    return Window(source=window.source, index=window.index, offset=window.offset + start, samples=window.samples[cut:])


def _finite(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """NaN and infinite samples carry no sound: they become silence."""
    if np.isfinite(samples).all():
        return samples
    return np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)


def _unwrap(result: FileResult) -> Transcript:
    if result.error is not None:
        raise result.error
    assert result.transcript is not None
    return result.transcript

