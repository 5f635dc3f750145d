"""The greedy (or sampled) decoding loop over a batch, in two flavours that give the same tokens.

``decode_synced`` (the CPU backend): the host reads every step's tokens before it builds the next step; the
decoder's step (``step.host.HostStep``), the rules and the scores run in numpy (MLX's CPU ``exp`` is
10-20× slower than numpy's, and each MLX/numpy exchange is a synchronisation); finished sequences leave the batch
at once.

``decode_lagged`` (a GPU): everything a step needs stays on the device (the rules' timestamp state too), so step
t+1's forward is queued (``mx.async_eval``) before the host reads step t's tokens, and the host reads the tokens
of ``READ_EVERY`` steps at once: it learns of an end-of-text a few steps late, and never keeps the device waiting.
On MLX's CUDA backend each host read goes through managed memory, and read every step it slowed the steps around
it (small kernels of a few µs took 40-190 µs, as if faulting pages back: ``docs/performance.md`` #72-#73). A
finished sequence's later rows are ignored, and the batch is compacted only once enough of it has finished (each
compaction copies every window's cross-attention K/V). The synced loop copies each step's attention rows into one
host buffer per sequence; the lagged loop writes them into blocks on the device (``DeviceRows``) and reads them
once, at the batch's end: at batch 64, reading each step's 3.8 MB and copying it out per sequence held up the
host that should be building the next step (``docs/performance.md`` #65, #68).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from typing import Any

import mlx.core as mx
import numpy as np
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx.rules import (
    DeviceTimestampState,
    LogitRules,
    TimestampState,
    logsumexp,
    step_scores,
)
from onepass_whisper.adapters.mlx.step import DecoderStep

COMPACT_FRACTION = 8  # decode_lagged compacts once a 1/8 of the rows (at least one) belong to finished sequences
ROWS_BLOCK = 32  # decode_lagged's attention rows: device memory is taken in blocks of this many steps
READ_EVERY = 4  # decode_lagged: the host reads the tokens and scores of this many steps at once
SAMPLING_SEED = 0  # the keys of sampled decoding (temperature fallback): seed + step, the same on every run


class BatchResults:
    """What the host knows of each sequence of a batch: tokens, scores and attention rows."""

    def __init__(
        self,
        batch: int,
        eot: int,
        limit: int,
        listener: Callable[[float], None] | None = None,
        rows_on_device: bool = False,
        limits: NDArray[np.int64] | None = None,
    ) -> None:
        """``rows_on_device``: the lagged loop leaves the attention rows on the device (``device_rows``), for word
        timing there (``alignment.py``), instead of reading them. ``limits``: each sequence's own step limit (at
        most ``limit``; the benchmarks end random-weight sequences at recorded lengths), by default ``limit``."""
        self.eot = eot
        self.rows_on_device = rows_on_device
        self.device_rows: mx.array | None = None  # steps × batch × heads × frames, where kept on the device
        self.limit = limit
        self.limits = np.full(batch, limit, np.int64) if limits is None else np.minimum(limits, limit)
        self.listener = listener  # hears ``share()`` after each step read
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.probabilities: list[list[float]] = [[] for _ in range(batch)]
        self.sum_logprobs = np.zeros(batch)
        self.done = np.zeros(batch, bool)  # end-of-text sampled
        self.rows = np.zeros(batch, np.int64)  # steps taken: attention rows that belong to the sequence
        self._attention: list[NDArray[np.float32] | None] = [None] * batch  # heads × limit × frames, filled in
        self._read_rows: NDArray[np.float32] | None = None  # or all at once: steps × batch × heads × frames
        # where each sequence's rows lie in those: its column of the batch axis, and the step of its first row
        # (the refilled loops, ``refill.py``: a column holds one sequence after another)
        self.columns = np.arange(batch)
        self.starts = np.zeros(batch, np.int64)

    def place(self, sequences: NDArray[np.int64], columns: NDArray[np.int64], start: int) -> None:
        """``sequences``' rows lie in ``columns`` of the rows read at once, from step ``start`` on."""
        self.columns[sequences] = columns
        self.starts[sequences] = start

    def finished(self, sequences: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Whether each of ``sequences`` has ended: end-of-text sampled, or cut at the step limit."""
        result: NDArray[np.bool_] = self.done[sequences] | (self.rows[sequences] >= self.limits[sequences])
        return result

    def add(
        self,
        active: NDArray[np.int64],
        attention: NDArray[np.float32] | None,
        tokens: NDArray[np.integer],
        logprobs: NDArray[np.float32],
        probabilities: NDArray[np.float32],
    ) -> None:
        """One step of the sequences ``active`` (row -> sequence); rows of sequences already done are ignored.

        ``attention``: rows × heads × frames, float32 (cast on the device: numpy's float16 -> float32 runs at
        ~0.2 GB/s), copied into each sequence's own buffer, so that the end of a batch copies nothing; None where
        the rows come all at once at the end (``set_rows``).
        """
        for row, sequence in enumerate(active):
            if self.done[sequence] or self.rows[sequence] >= self.limits[sequence]:  # ended: a row kept, read late
                continue
            if attention is not None:
                rows = self._attention[sequence]
                if rows is None:  # untouched pages of np.empty cost no memory
                    heads, frames = attention.shape[1:]
                    rows = self._attention[sequence] = np.empty((heads, self.limit, frames), np.float32)
                rows[:, self.rows[sequence]] = attention[row]
            token = int(tokens[row])
            self.rows[sequence] += 1
            self.sum_logprobs[sequence] += logprobs[row]
            if token == self.eot:
                self.done[sequence] = True
            else:
                self.tokens[sequence].append(token)
                self.probabilities[sequence].append(float(probabilities[row]))
        if self.listener is not None:
            self.listener(self.share())

    def share(self) -> float:
        """How far the batch has come, 0 to 1: a finished sequence counts whole, another its steps over the step
        limit (most end well before it, so this runs behind early on and catches up as sequences finish)."""
        return float(np.where(self.done, 1.0, np.minimum(self.rows / self.limits, 1.0)).mean())

    def set_rows(self, rows: NDArray[np.float32]) -> None:
        """Every sequence's attention rows at once (steps × batch × heads × frames), step t of a sequence at row
        ``starts`` + t of its column (``place``); a sequence's rows past its own end are ignored."""
        self._read_rows = rows

    def attention(self, heads: int) -> list[NDArray[np.float32]]:
        """Each sequence's rows (heads × rows × frames): one per sampled token, then end-of-text's.

        A sequence cut at the length limit has no end-of-text row.
        """
        if self._read_rows is not None:  # views: heads × steps × frames
            read = self._read_rows
            return [
                read[start : start + count, column].transpose(1, 0, 2)
                for start, column, count in zip(self.starts, self.columns, self.rows)
            ]
        return [
            np.zeros((heads, 0, 0), np.float32) if rows is None else rows[:, : self.rows[sequence]]
            for sequence, rows in enumerate(self._attention)
        ]


class DeviceRows:
    """The lagged loop's attention rows, kept on the device until the batch's end and then read at once.

    Blocks of ``ROWS_BLOCK`` steps (steps × batch × heads × frames, the model's dtype), taken as the steps come;
    each step's rows go to their sequences' places (the batch may have been compacted) by one scatter, which MLX
    does in place: the block has no other reference. Steps lead, so the steps taken are one contiguous range and
    the read is one plain copy.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.steps = 0
        self._blocks: list[mx.array] = []

    def write(self, sequences: mx.array, attention: mx.array) -> mx.array:
        """Step ``self.steps``'s rows (rows × heads × frames) for ``sequences`` (row -> sequence); returns the
        block written, to be evaluated with the step."""
        slot = self.steps % ROWS_BLOCK
        if slot == 0:
            heads, frames = attention.shape[1:]
            self._blocks.append(mx.zeros((ROWS_BLOCK, self.batch, heads, frames), attention.dtype))
        block = self._blocks[-1]
        block[slot, sequences] = attention
        self.steps += 1
        return block

    def whole(self) -> mx.array:
        """steps × batch × heads × frames, the model's dtype, on the device (the blocks are let go)."""
        if not self._blocks:
            return mx.zeros((0, self.batch, 0, 0), mx.float32)
        whole = self._blocks[0] if len(self._blocks) == 1 else mx.concatenate(self._blocks)
        self._blocks = []
        return whole[: self.steps]

    def read(self) -> NDArray[np.float32]:
        """steps × batch × heads × frames, float32: one transfer to the host."""
        return np.array(self.whole().astype(mx.float32))


def choose(masked: mx.array, temperature: float, step: int = 0) -> mx.array:
    """Each row's next token: the best, or at ``temperature`` > 0 one drawn with a key fixed by the step, so that a
    sampled fallback gives the same tokens on every run (and the caller's MLX random state is left alone)."""
    if temperature > 0:
        return mx.random.categorical(masked / temperature, key=mx.random.key(SAMPLING_SEED + step))
    return mx.argmax(masked, axis=-1)


def decode_synced(
    state: DecoderStep[NDArray[Any]],
    rules: LogitRules,
    logits: NDArray[np.float32],
    attention: NDArray[np.float32],
    results: BatchResults,
    temperature: float,
    finish_below: NDArray[np.int64] | None = None,
) -> None:
    """Step by step in numpy (a host ``DecoderStep``, ``LogitRules.apply_host``), the host reading each step before
    the next: finished sequences leave the batch at once. ``finish_below``: see ``LogitRules``."""
    eot, timestamp_begin = rules.eot, rules.timestamp_begin
    ts_state = TimestampState.initial(len(results.tokens), finish_below)
    active = np.arange(len(results.tokens))
    limit = results.limit  # steps at most
    for step in range(limit):
        masked = rules.apply_host(logits, ts_state, first_step=step == 0)
        if temperature > 0:
            tokens = np.array(choose(mx.array(masked), temperature, step))
        else:
            tokens = masked.argmax(axis=-1)
        logprobs, probabilities = _token_scores(masked, logits, tokens, eot)
        results.add(active, attention, tokens, logprobs, probabilities)
        going = ~results.finished(active)
        if step == limit - 1 or not going.any():
            break
        ts_state = ts_state.after(tokens, timestamp_begin)
        if not going.all():
            keep = np.flatnonzero(going)
            state.keep(keep)
            ts_state = ts_state.select(keep)
            active = active[keep]
            tokens = tokens[keep]
        logits_list, attention = state.step(tokens[:, None])
        logits = logits_list[0]


def decode_lagged(
    state: DecoderStep[mx.array],
    rules: LogitRules,
    logits: mx.array,
    attention: mx.array,
    results: BatchResults,
    temperature: float,
    finish_below: NDArray[np.int64] | None = None,
    reads: LaggedReads | None = None,
) -> None:
    """Step t+1 is queued on the device before the host reads step t: the host never keeps the device waiting.

    The host reads the tokens and scores of ``READ_EVERY`` steps at once (``LaggedReads``); the attention rows stay
    on the device (``DeviceRows``) until the loop ends. So a sequence's end-of-text is read 1 to ``READ_EVERY``
    steps after it was sampled, with one more step queued meanwhile: the finished sequence's later steps are
    ignored, and the batch is compacted at that read. ``reads``: how the steps are read (the benchmark's
    comparison); by default stacked ahead.
    """
    ts_state = DeviceTimestampState.initial(len(results.tokens), finish_below)
    active = np.arange(len(results.tokens))
    sequences = mx.array(active)
    rows = DeviceRows(len(results.tokens))
    reads = LaggedReads() if reads is None else reads
    limit = results.limit  # steps at most
    for step in range(limit):
        chosen, scores, after = pick(rules, logits, ts_state, temperature, step)
        block = rows.write(sequences, attention)
        queued = [scores, block, *reads.add(active, scores)]
        if step < limit - 1:
            ts_state = after
            logits_list, attention = state.step(chosen[:, None])
            logits = logits_list[0]
            queued += [logits, attention]
        mx.async_eval(*queued)  # type: ignore[no-untyped-call]
        if not reads.due():  # the newest step stays unread: the device is still on it
            continue
        reads.read(results)
        if results.finished(np.arange(len(results.tokens))).all():
            reads.drop()  # every sequence has ended: the last step queued is not needed
            break
        finished = results.finished(active)
        if finished.sum() >= max(1, len(active) // COMPACT_FRACTION):
            keep = np.flatnonzero(~finished)
            kept = mx.array(keep)
            state.keep(kept)
            ts_state = ts_state.select(kept)
            logits, attention = logits[kept], attention[kept]
            active = active[keep]
            sequences = mx.array(active)
    reads.read(results, newest=True)
    if results.rows_on_device:
        results.device_rows = rows.whole()
    else:
        results.set_rows(rows.read())


def pick(
    rules: LogitRules, logits: mx.array, state: DeviceTimestampState, temperature: float, step: int
) -> tuple[mx.array, mx.array, DeviceTimestampState]:
    """One step's tokens on the device: the chosen tokens, their scores (3 × rows, float32: token, log-probability,
    probability) and the timestamp state after them. A greedy step after the first is the rules' compiled
    ``pick``; the first step's mask and sampling are built op by op."""
    if temperature == 0 and step > 0:
        return rules.pick(logits, state)
    masked = rules.apply(logits, state, first_step=step == 0)
    chosen = choose(masked, temperature, step)
    return chosen, step_scores(masked, logits, chosen, rules.eot), state.after(chosen, rules.timestamp_begin)


class LaggedReads:
    """The lagged loops' reads of each step's scores (3 × rows: token, log-probability, probability),
    ``READ_EVERY`` steps at a time, each run of steps over the same rows as one array.

    A read must wait only for steps the device has finished, never for the end of its queue. An array made at the
    read (the steps stacked then) is queued behind everything queued before it, the newest step's forward too: the
    host would wait for the device to run dry, and the device would then wait for the host to build and launch the
    next step (at batch 1 the host's evaluation of a step takes about as long as the device's). So the stack is made
    ahead (``ahead``): the step that makes ``READ_EVERY`` steps unread queues their stack with its own work (``add``
    returns it), and the next step's read waits for that evaluation alone while the device runs the newest step.
    ``ahead=False`` stacks at the read, the way before (``benchmarks/gpu.py --engines loop`` compares the two).
    """

    def __init__(self, ahead: bool = True) -> None:
        self.ahead = ahead
        self._steps = 0  # steps added
        self._unstacked: list[tuple[int, NDArray[np.int64], mx.array]] = []  # (step, rows' sequences, scores)
        self._stacked: list[tuple[int, NDArray[np.int64], mx.array]] = []  # (last step, sequences, steps × 3 × rows)
        self._read = 0  # the steps before this one are read

    def add(self, active: NDArray[np.int64], scores: mx.array) -> list[mx.array]:
        """One step's ``scores`` for the rows ``active`` (row -> sequence); returns the arrays to evaluate with it."""
        self._unstacked.append((self._steps, active, scores))
        self._steps += 1
        return self._stack(self._unstacked) if self.ahead and len(self._unstacked) == READ_EVERY else []

    def due(self) -> bool:
        """Whether ``READ_EVERY`` steps wait to be read besides the newest."""
        return self._steps - self._read > READ_EVERY

    def read(self, results: BatchResults, newest: bool = False) -> None:
        """Every unread step but the newest (``newest``: that one too) into ``results``."""
        last = self._steps - (0 if newest else 1)  # the steps before this one are read
        self._stack([step for step in self._unstacked if step[0] < last])  # ahead, none but at the loop's end
        for _, active, stacked in [step for step in self._stacked if step[0] < last]:
            for chosen, logprob, probability in np.array(stacked):
                results.add(active, None, chosen.astype(np.int64), logprob, probability)
        self._stacked = [step for step in self._stacked if step[0] >= last]
        self._read = last

    def drop(self) -> None:
        """Forget the unread steps (every sequence has ended before them)."""
        self._stacked, self._unstacked, self._read = [], [], self._steps

    def _stack(self, steps: list[tuple[int, NDArray[np.int64], mx.array]]) -> list[mx.array]:
        """``steps`` (unstacked, in order) as one array a run over the same rows (the batch may have been compacted
        between): moved from the unstacked to the stacked."""
        made = []
        for _, grouped in groupby(steps, key=lambda step: id(step[1])):
            run = list(grouped)
            made.append(mx.stack([scores for _, _, scores in run]))
            self._stacked.append((run[-1][0], run[0][1], made[-1]))
        moved = {index for index, _, _ in steps}
        self._unstacked = [step for step in self._unstacked if step[0] not in moved]
        return made


def _token_scores(
    masked: NDArray[np.float32], logits: NDArray[np.float32], tokens: NDArray[np.integer], eot: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Each row's chosen token's log-probability under the rules' mask, and its probability among text tokens."""
    rows = np.arange(len(tokens))
    logprob = masked[rows, tokens] - logsumexp(masked)
    probability = np.exp(logits[rows, tokens] - logsumexp(logits[:, :eot]))
    return logprob.astype(np.float32), probability.astype(np.float32)
