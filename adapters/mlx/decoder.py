"""``MlxWhisperDecoder``: many 30-second windows decoded together, word-timing attention captured on the way.

One ``decode_batch`` call: log-mel spectrograms of all windows, one batched encoder pass, language detection per
window where asked, then greedy decoding of the batch with a per-sequence KV cache. A sequence that emits
end-of-text leaves the batch (the caches are compacted by active indices) and the rest go on. Each step keeps, per
sequence, one row of cross-attention for each alignment head: that is all the word aligner needs, so there is no
second encoder or decoder pass. A sequence may not end with a segment opened (a timestamp pair) while more than
a second of sound follows the opening in its window: windows end in pauses, so the segment is whole there and is
transcribed in the same pass (openai-whisper would seek to it and decode another window). Windows whose result
fails the compression-ratio or log-probability checks are decoded again, together, at the next temperature; the
rows of the discarded attempt are dropped with it. Where the decoder aligns on the device (``alignment``: MLX's
CUDA backend by default), the rows stay there, and once the batch's attempts are chosen one batched computation
per temperature pass gives each window's DTW frames (``DecodedChunk.token_frames``): only those cross to the host.
Where the model has a word-edge probe (``edge_probe.py``) and words are timed, each encoder batch's output is scored
as word edges frame by frame on its device (``DecodedChunk.edge_logits``): two numbers a frame cross to the host.
With ``char_timing``, a second, teacher-forced pass spells each window's words one character a token over the same
encoder output and keeps the alignment heads' rows (``char_forcing.py``, ``DecodedChunk.char_rows``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import mlx.core as mx
import numpy as np
from attrs import frozen
from mlx_whisper.decoding import detect_language
from mlx_whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE, Tokenizer, get_tokenizer
from mlx_whisper.whisper import Whisper
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.char_heads import HeadStore
from onepass_whisper.adapters.mlx.ahead import AheadEncoding
from onepass_whisper.adapters.mlx.alignment import AlignedRows, DeviceAlignment
from onepass_whisper.adapters.mlx.char_forcing import CharForcer
from onepass_whisper.adapters.mlx.edge_probe import EdgeProbe
from onepass_whisper.adapters.mlx.encoder import window_mel
from onepass_whisper.adapters.mlx.loop import BatchResults
from onepass_whisper.adapters.mlx.refill import Admitted
from onepass_whisper.adapters.mlx.rules import LogitRules
from onepass_whisper.adapters.mlx.segments import single_timestamp_ending, split_segments
from onepass_whisper.adapters.mlx.step.factory import Backend, Prompt, choose, choose_alignment
from onepass_whisper.adapters.mlx.step.settings import StepSettings
from onepass_whisper.domain.audio import FRAME_SECONDS, DecodedChunk, Window
from onepass_whisper.domain.decoding import best_attempt, compression_ratio, finish_until, is_silent, needs_fallback
from onepass_whisper.domain.errors import InvalidOptionError, UnsupportedLanguageError
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.domain.ports import BatchProgress

ENCODER_BATCH = 8  # windows per encoder call: bounds the encoder's activation memory
AHEAD_KEPT = 2  # ``encode_ahead``'s outputs held: the batch being taken and the one after it


@frozen
class Attempt:
    """One sequence's result at one temperature."""

    tokens: tuple[int, ...]  # sampled tokens, end-of-text excluded
    token_probabilities: NDArray[np.float32]  # (tokens,): probability of each token among text tokens
    # alignment heads × rows × frames: one row per sampled token, then end-of-text's (none when cut at the limit)
    attention: NDArray[np.float32]
    sum_logprob: float
    no_speech_prob: float
    temperature: float
    row_count: int = 0  # attention rows that belong to the sequence (steps taken)
    # where the rows stayed on the device (``attention`` empty then): its pass's rows, steps × batch × heads ×
    # frames, and the sequence's place in that batch
    device_rows: mx.array | None = None
    batch_index: int = 0
    row_start: int = 0  # the step of the sequence's first row there (a refilled row's later sequence: not 0)


class MlxWhisperDecoder:
    """The ``Decoder`` port on MLX (Metal, CUDA or CPU)."""

    def __init__(
        self,
        model: Whisper,
        name: str,
        alignment_heads: Sequence[tuple[int, int]] | None = None,
        settings: StepSettings = StepSettings(),
        backend: Backend | None = None,
        alignment: DeviceAlignment | None | bool = True,
        rows: int | None = None,
        edge_probe: EdgeProbe | None | bool = True,
        char_timing: bool = False,
        char_heads: HeadStore | None = None,
    ) -> None:
        """``backend``: how batches are encoded and stepped, by default ``step.factory.choose``'s for MLX's default
        device and ``settings``. ``alignment``: word timing's DTW on the device (``alignment.DeviceAlignment``),
        None or False for none, True for ``step.factory.choose_alignment``'s choice for the device and ``settings``.
        ``rows``: a call with more windows than this keeps that many rows busy in its greedy pass, a row whose
        sequence ends taking the next window (``refill.py``), and decodes its fallback passes that many at a time;
        None: every window of a call at once (so too a call whose first temperature is above 0). ``edge_probe``:
        the encoder's word-edge probe (``edge_probe.py``) whose frame scores go with each chunk where words are
        timed; True for the one trained on ``model``'s weights (none where there is none), None or False for none.
        ``char_timing``: where words are timed, each chunk also gets the character-forcing pass's rows
        (``char_forcing.py``); ``char_heads``: where the choice of the heads those rows come from is kept between
        runs (``adapters/dtw/char_heads.py``)."""
        if rows is not None and rows < 1:
            raise ValueError(f"rows must be at least 1, got {rows}")
        self.rows = rows
        self.model = model
        self._name = name
        if alignment_heads is None:  # as openai-whisper: every head of the last half of the layers
            layers, heads = model.dims.n_text_layer, model.dims.n_text_head
            alignment_heads = [(layer, head) for layer in range(layers // 2, layers) for head in range(heads)]
        self.alignment_heads = [(int(layer), int(head)) for layer, head in alignment_heads]
        self.dtype = model.decoder.token_embedding.weight.dtype
        self.backend = choose(model, self.alignment_heads, settings) if backend is None else backend
        self.alignment = choose_alignment(settings) if alignment is True else alignment or None
        self.edge_probe = EdgeProbe.for_model(model) if edge_probe is True else edge_probe or None
        self.char_timing = char_timing
        self.char_heads = char_heads
        self._char_forcer: CharForcer | None = None  # made on first use
        self._rules_cache: dict[tuple[str, str, bool], LogitRules] = {}
        # what ``encode_ahead`` started, newest last: the next batch's, queued while this one is taken
        self._ahead: deque[AheadEncoding] = deque(maxlen=AHEAD_KEPT)

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_multilingual(self) -> bool:
        return bool(self.model.is_multilingual)

    # -- the port ---------------------------------------------------------------------------------------------

    def check_options(self, options: TranscribeOptions) -> None:
        self._check_options(options)

    @property
    def encodes_ahead(self) -> bool:
        return self.backend.side_stream is not None

    def encode_ahead(self, windows: Sequence[Window], options: TranscribeOptions) -> None:
        """The windows' spectrograms, encoder and edge-probe product queued on the backend's second stream and not
        waited for (``ahead.py``)."""
        stream = self.backend.side_stream
        if stream is None or not windows:
            return
        groups = [windows[start : start + ENCODER_BATCH] for start in range(0, len(windows), ENCODER_BATCH)]
        probe = self.edge_probe if options.word_timestamps else None
        self._ahead.append(AheadEncoding(windows, groups, self._mels, self.backend.encode_unevaluated, probe, stream))

    def _mels(self, windows: Sequence[Window]) -> mx.array:
        """The windows' log-mel spectrograms, batch × frames × mels, in the model's dtype."""
        return mx.stack([window_mel(w.samples, self.model.dims.n_mels) for w in windows]).astype(self.dtype)

    def decode_batch(
        self, windows: Sequence[Window], options: TranscribeOptions, progress: BatchProgress | None = None
    ) -> list[DecodedChunk]:
        if not windows:
            return []
        language = self._check_options(options)
        finish_below = self._finish_below(windows)
        refill = self.rows is not None and len(windows) > self.rows and options.temperatures[0] == 0
        features: mx.array | None = None
        first: list[Attempt] | None = None
        edges: dict[int, NDArray[np.float32]] | None = {} if options.word_timestamps else None  # id(window) ->
        if refill:  # each window encoded as a row frees up for it; a fallback pass encodes its windows again
            first, languages, probabilities = self._decode_refilled(
                windows, language, options, finish_below, progress, edges
            )
        else:
            features = self._encode(windows, edges)  # windows × audio ctx × state
            languages, probabilities = self._languages(features, language)
        results: list[Attempt | None] = [None] * len(windows)
        tried: list[list[Attempt]] = [[] for _ in windows]  # each window's failed attempts, for the final choice
        pending = list(range(len(windows)))
        for number, temperature in enumerate(options.temperatures):
            last = number == len(options.temperatures) - 1
            if first is not None and number == 0:
                attempts = first
            elif features is not None:
                attempts = self._decode(
                    features[mx.array(pending)],
                    [languages[i] for i in pending],
                    options,
                    temperature,
                    finish_below[pending],
                    progress if number == 0 else None,  # the first pass decodes every window: the batch's share
                )
            else:  # after a refilled first pass: the windows that fall back, together, ``rows`` at a time
                attempts = []
                size = self.rows or len(pending)
                for start in range(0, len(pending), size):
                    part = pending[start : start + size]
                    attempts += self._decode(
                        self._encode([windows[i] for i in part]),
                        [languages[i] for i in part],
                        options,
                        temperature,
                        finish_below[part],
                    )
            retry = []
            for index, attempt in zip(pending, attempts):
                if not self._needs_fallback(attempt, languages[index], options):
                    results[index] = attempt
                elif not last:
                    tried[index].append(attempt)  # its attention rows go with the attempt
                    retry.append(index)
                else:  # every temperature failed: the best attempt, not the last (domain.decoding.best_attempt)
                    results[index] = self._best([*tried[index], attempt], languages[index], options)
            pending = retry
            if not pending:
                break
        frames = self._token_frames(windows, results, languages, options)
        chunks = [
            self._chunk(
                window, languages[i], probabilities[i], attempt, options, frames.get(i), (edges or {}).get(id(window))
            )
            for i, (window, attempt) in enumerate(zip(windows, results))
            if attempt is not None
        ]
        if self.char_timing and options.word_timestamps:
            if self._char_forcer is None:
                self._char_forcer = CharForcer(self.model, self.alignment_heads, self.char_heads)
            chunks = self._char_forcer.spell(chunks, windows, features, self._encode, options.task)
        return chunks

    # -- steps ------------------------------------------------------------------------------------------------

    def _check_options(self, options: TranscribeOptions) -> str | None:
        """The language code to force, or None to detect it per window."""
        language = options.language
        if not self.is_multilingual:
            if options.task == "translate":
                raise InvalidOptionError("task", f"translate needs a multilingual model; {self.name} is English-only")
            if language is not None and language.lower() not in ("en", "english"):
                raise UnsupportedLanguageError(language, f"{self.name} is an English-only model")
            return "en"
        if language is None:
            return None
        code = language.lower()
        code = str(TO_LANGUAGE_CODE.get(code, code))
        if code not in LANGUAGES:
            raise UnsupportedLanguageError(language, "not a Whisper language code or name")
        return code

    def _tokenizer(self, language: str, task: str) -> Tokenizer:
        return get_tokenizer(self.is_multilingual, num_languages=self.model.num_languages, language=language, task=task)

    def _encode(self, windows: Sequence[Window], edges: dict[int, NDArray[np.float32]] | None = None) -> mx.array:
        """windows × audio ctx × state; with ``edges`` and a probe, each window's edge logits put there too (under
        ``id(window)``), from the output just computed: two numbers a frame cross to the host. Where
        ``encode_ahead`` started on these windows, its output."""
        for number, ahead in enumerate(self._ahead):
            features = ahead.take(windows, edges, self.edge_probe)
            if features is not None:
                for _ in range(number + 1):  # it and any started before it, which no call will take now
                    self._ahead.popleft()
                return features
        parts = []
        for start in range(0, len(windows), ENCODER_BATCH):
            some = windows[start : start + ENCODER_BATCH]
            parts.append(self.backend.encode(self._mels(some)))
            if edges is not None and self.edge_probe is not None:
                projected = self.edge_probe.project(parts[-1])
                edges.update((id(w), self.edge_probe.logits(p, w.num_frames)) for w, p in zip(some, projected))
        return mx.concatenate(parts) if len(parts) > 1 else parts[0]

    def _finish_below(self, windows: Sequence[Window]) -> NDArray[np.int64]:
        """Per window, the timestamp token below which a segment opened there must be finished there
        (``LogitRules``): the tail rule's ``finish_until`` (``domain/decoding.py``), as a timestamp token."""
        until = np.array([finish_until(w) for w in windows])
        frames = np.maximum(0, np.ceil(until / FRAME_SECONDS - 1e-6)).astype(np.int64)
        bounds: NDArray[np.int64] = frames + int(self._tokenizer("en", "transcribe").timestamp_begin)
        return bounds

    def _languages(self, features: mx.array, language: str | None) -> tuple[list[str], list[float | None]]:
        """Each window's language and the detector's probability of it (None where ``language`` is given)."""
        if language is not None:
            return [language] * features.shape[0], [None] * features.shape[0]
        tokenizer = self._tokenizer("en", "transcribe")
        _, probabilities = detect_language(self.model, features, tokenizer)
        codes = [str(max(p, key=p.get)) for p in probabilities]
        return codes, [float(p[code]) for p, code in zip(probabilities, codes)]

    def _prompt(self, language: str, options: TranscribeOptions) -> tuple[list[int], int]:
        """The initial tokens and the index of start-of-transcript in them."""
        tokenizer = self._tokenizer(language, options.task)
        tokens = list(tokenizer.sot_sequence)
        if options.initial_prompt:
            prompt = tokenizer.encode(" " + options.initial_prompt.strip())
            tokens = [tokenizer.sot_prev, *prompt[-(self.model.dims.n_text_ctx // 2 - 1) :], *tokens]
        return tokens, tokens.index(tokenizer.sot)

    def _rules(self, options: TranscribeOptions) -> LogitRules:
        key = (options.task, options.suppress_tokens, options.suppress_blank)
        if key not in self._rules_cache:  # kept: on a GPU its mask is a compiled function
            self._rules_cache[key] = self._new_rules(options)
        return self._rules_cache[key]

    def _new_rules(self, options: TranscribeOptions) -> LogitRules:
        tokenizer = self._tokenizer("en", options.task)
        suppress = set(tokenizer.non_speech_tokens) if "-1" in options.suppress_tokens.split(",") else set()
        suppress |= {int(t) for t in options.suppress_tokens.split(",") if t.strip() and int(t) >= 0}
        suppress |= {tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm}
        if tokenizer.no_speech is not None:
            suppress.add(tokenizer.no_speech)
        blank = [*tokenizer.encode(" "), tokenizer.eot] if options.suppress_blank else []
        return LogitRules(
            n_vocab=self.model.dims.n_vocab,
            eot=tokenizer.eot,
            timestamp_begin=tokenizer.timestamp_begin,
            no_timestamps=tokenizer.no_timestamps,
            suppress=sorted(suppress),
            blank=blank,
            max_initial_timestamp_index=round(1.0 / FRAME_SECONDS),  # openai-whisper: max_initial_timestamp=1.0 s
            compiled=self.backend.compiled_rules,
        )

    def _decode(
        self,
        features: mx.array,
        languages: Sequence[str],
        options: TranscribeOptions,
        temperature: float,
        finish_below: NDArray[np.int64] | None = None,
        listener: BatchProgress | None = None,
    ) -> list[Attempt]:
        """Greedy (or sampled, at ``temperature`` > 0) decoding of a batch; finished sequences leave it.

        ``finish_below``: each sequence's ``LogitRules`` bound on ending after an opened segment (none if None).
        """
        batch = features.shape[0]
        tokenizer = self._tokenizer(languages[0], options.task)
        rules = self._rules(options)
        prompts = [self._prompt(language, options) for language in languages]
        sot_index = prompts[0][1]
        limit = self._limit(len(prompts[0][0]), options)

        on_device = self.alignment is not None and options.word_timestamps
        results = BatchResults(batch, tokenizer.eot, limit, listener, rows_on_device=on_device)
        tokens = np.array([p for p, _ in prompts], np.int32)
        no_speech_host = self.backend.decode(
            features, Prompt(tokens, sot_index, tokenizer.no_speech), rules, results, temperature, finish_below
        )
        return self._attempts(results, no_speech_host, temperature, on_device)

    def _limit(self, prompt_length: int, options: TranscribeOptions) -> int:
        """Steps a sequence may take at most."""
        limit = options.max_new_tokens or self.model.dims.n_text_ctx // 2
        return int(min(limit, self.model.dims.n_text_ctx - prompt_length))

    def _decode_refilled(
        self,
        windows: Sequence[Window],
        language: str | None,
        options: TranscribeOptions,
        finish_below: NDArray[np.int64],
        listener: BatchProgress | None,
        edges: dict[int, NDArray[np.float32]] | None = None,
    ) -> tuple[list[Attempt], list[str], list[float | None]]:
        """Greedy decoding of every window, ``rows`` at a time (``refill.py``): windows are encoded, their
        language detected and their prompt fed as rows free up for them. Returns the attempts, each window's
        language and the detector's probability of it."""
        count = len(windows)
        languages: list[str] = [""] * count
        probabilities: list[float | None] = [None] * count
        no_speech: list[tuple[NDArray[np.int64], object]] = []  # read once the decoding is done
        tokenizer = self._tokenizer("en", options.task)
        waiting = deque(range(count))
        rows = self.rows or count

        def admit(wanted: int) -> Admitted[object] | None:
            if not waiting:
                return None
            taken = np.array([waiting.popleft() for _ in range(min(wanted, len(waiting)))])
            features = self._encode([windows[i] for i in taken], edges)
            found, probability = self._languages(features, language)
            for index, code, p in zip(taken, found, probability):
                languages[index], probabilities[index] = code, p
            prompts = [self._prompt(code, options) for code in found]
            prompt = Prompt(np.array([p for p, _ in prompts], np.int32), prompts[0][1], tokenizer.no_speech)
            started = self.backend.prompt(features, prompt, rows)
            no_speech.append((taken, started.no_speech))
            return Admitted(taken, started.step, started.logits, started.attention, finish_below[taken])

        limit = self._limit(len(self._prompt(language or "en", options)[0]), options)
        on_device = self.alignment is not None and options.word_timestamps
        results = BatchResults(count, tokenizer.eot, limit, listener, rows_on_device=on_device)
        self.backend.decode_refilled(admit, rows, self._rules(options), results)
        no_speech_host = np.full(count, np.nan)
        for taken, values in no_speech:
            no_speech_host[taken] = np.asarray(values, np.float64)
        return self._attempts(results, no_speech_host, 0.0, on_device), languages, probabilities

    def _attempts(
        self, results: BatchResults, no_speech: NDArray[np.float64], temperature: float, on_device: bool
    ) -> list[Attempt]:
        """Each sequence's attempt from what the loop gathered; ``on_device``: its rows kept on the device."""
        heads = len(self.alignment_heads)
        rows = results.attention(heads)
        device_rows = results.device_rows
        batch = len(results.tokens)
        if on_device and device_rows is None:  # the synced loop's rows are on the host: the device's copy of them
            device_rows = mx.array(_stacked_rows(rows, heads))
            rows = [np.zeros((heads, 0, 0), np.float32)] * batch
        return [
            Attempt(
                tokens=tuple(results.tokens[i]),
                token_probabilities=np.array(results.probabilities[i], np.float32),
                attention=rows[i],
                sum_logprob=float(results.sum_logprobs[i]),
                no_speech_prob=float(no_speech[i]),
                temperature=temperature,
                row_count=int(results.rows[i]),
                device_rows=device_rows,
                batch_index=int(results.columns[i]),
                row_start=int(results.starts[i]),
            )
            for i in range(batch)
        ]

    def _avg_logprob(self, attempt: Attempt) -> float:
        return attempt.sum_logprob / (len(attempt.tokens) + 1)

    def _text(self, attempt: Attempt, language: str, options: TranscribeOptions) -> str:
        return str(self._tokenizer(language, options.task).decode(list(attempt.tokens)))

    def _best(self, attempts: list[Attempt], language: str, options: TranscribeOptions) -> Attempt:
        scored = [(self._text(a, language, options), self._avg_logprob(a)) for a in attempts]
        return attempts[best_attempt(scored, options)]

    def _needs_fallback(self, attempt: Attempt, language: str, options: TranscribeOptions) -> bool:
        text = self._text(attempt, language, options)
        return needs_fallback(text, attempt.no_speech_prob, self._avg_logprob(attempt), options)

    def _aligned_rows(self, attempt: Attempt, language: str, options: TranscribeOptions) -> list[int]:
        """The attention rows word timing takes: the text tokens' (timestamps dropped; none for a silent window),
        then end-of-text's (a sequence cut at the length limit has none: its last row stands in)."""
        tokenizer = self._tokenizer(language, options.task)
        text_index = [i for i, t in enumerate(attempt.tokens) if t < tokenizer.eot]
        if is_silent(attempt.no_speech_prob, self._avg_logprob(attempt), options):
            text_index = []
        return [*text_index, min(len(attempt.tokens), attempt.row_count - 1)]

    def _token_frames(
        self,
        windows: Sequence[Window],
        results: Sequence[Attempt | None],
        languages: Sequence[str],
        options: TranscribeOptions,
    ) -> dict[int, NDArray[np.int32]]:
        """Each window's DTW frames, where its attempt's rows stayed on the device: one batched computation per
        temperature pass among the attempts kept (``alignment.DeviceAlignment``)."""
        passes: dict[int, tuple[mx.array, list[int], list[AlignedRows]]] = {}
        for index, attempt in enumerate(results):
            if attempt is None or attempt.device_rows is None or self.alignment is None:
                continue
            steps = tuple(attempt.row_start + row for row in self._aligned_rows(attempt, languages[index], options))
            _, indices, sequences = passes.setdefault(id(attempt.device_rows), (attempt.device_rows, [], []))
            indices.append(index)
            sequences.append(AlignedRows(attempt.batch_index, steps, windows[index].num_frames))
        frames: dict[int, NDArray[np.int32]] = {}
        for rows, indices, sequences in passes.values():
            assert self.alignment is not None
            frames.update(zip(indices, self.alignment.token_frames(rows, sequences)))
        return frames

    def _chunk(
        self,
        window: Window,
        language: str,
        probability: float | None,
        attempt: Attempt,
        options: TranscribeOptions,
        token_frames: NDArray[np.int32] | None = None,
        edge_logits: NDArray[np.float32] | None = None,
    ) -> DecodedChunk:
        """The window's chunk; ``probability``: the detector's for its language (None where it was given);
        ``token_frames``: its DTW frames, computed on the device (no attention then)."""
        tokenizer = self._tokenizer(language, options.task)
        avg_logprob = self._avg_logprob(attempt)
        text = self._text(attempt, language, options)
        silent = is_silent(attempt.no_speech_prob, avg_logprob, options)
        segments = () if silent else split_segments(attempt.tokens, tokenizer, window.duration)
        # keep the text tokens' probabilities and attention rows (timestamps dropped); crop to the real frames
        text_index = [i for i, t in enumerate(attempt.tokens) if t < tokenizer.eot]
        if silent:
            text_index = []
        row_index = self._aligned_rows(attempt, language, options)
        attention = (
            attempt.attention[:, row_index, : window.num_frames] if attempt.attention.size else attempt.attention
        )
        if token_frames is not None:
            attention = np.zeros((0, 0, 0), np.float32)
        return DecodedChunk(
            window=window,
            language=language,
            language_probability=probability,
            segments=segments,
            token_probabilities=attempt.token_probabilities[text_index],
            attention=np.ascontiguousarray(attention),
            avg_logprob=avg_logprob,
            compression_ratio=compression_ratio(text.strip()),
            no_speech_prob=attempt.no_speech_prob,
            temperature=attempt.temperature,
            speech_ended=single_timestamp_ending(attempt.tokens, tokenizer.timestamp_begin),
            token_frames=token_frames,
            edge_logits=edge_logits,
        )


def _stacked_rows(rows: Sequence[NDArray[np.float32]], heads: int) -> NDArray[np.float32]:
    """Per-sequence rows (heads × rows × frames) as one steps × batch × heads × frames array, zero-padded."""
    steps = max((r.shape[1] for r in rows), default=0)
    frames = max((r.shape[2] for r in rows), default=0)
    stacked = np.zeros((steps, len(rows), heads, frames), np.float32)
    for sequence, r in enumerate(rows):
        stacked[: r.shape[1], sequence, :, : r.shape[2]] = r.transpose(1, 0, 2)
    return stacked
