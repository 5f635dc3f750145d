"""Logit rules for a batch of sequences, on the device: suppression and openai-whisper's timestamp rules.

Everything is a mask built from a few per-sequence vectors (no Python loop over the batch), and the mask is applied
BEFORE log-probabilities are taken, as openai-whisper does. mlx-whisper <= 0.4.2 broke at batch > 1 here
(``logsumexp`` without ``keepdims``); 0.4.3 still takes log-probabilities before its own mask and compares timestamp
*positions* with token ids, so it never forbids decreasing timestamps. Both are fixed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np
from attrs import frozen
from numpy.typing import NDArray


@frozen
class TimestampState:
    """What the timestamp rules need to know of each sequence's sampled tokens (host side, one entry a sequence).

    The sequences of a batch sample in lockstep, so ``sampled`` (tokens sampled so far) is shared.
    """

    last_was_timestamp: np.ndarray  # bool (batch,)
    penultimate_was_timestamp: np.ndarray  # bool (batch,): True while fewer than 2 tokens were sampled
    last_timestamp: np.ndarray  # int (batch,): the last timestamp token id sampled, -1 if none
    # int (batch,): end-of-text may not follow a segment opened at a timestamp token below this (see LogitRules)
    finish_below: np.ndarray
    sampled: int = 0

    @classmethod
    def initial(cls, batch: int, finish_below: np.ndarray | None = None) -> TimestampState:
        """Nothing sampled yet; ``finish_below`` (token ids, one a sequence) defaults to no such rule."""
        finish = np.zeros(batch, np.int64) if finish_below is None else np.asarray(finish_below, np.int64)
        return cls(np.zeros(batch, bool), np.ones(batch, bool), np.full(batch, -1, np.int64), finish)

    def after(self, tokens: np.ndarray, timestamp_begin: int) -> TimestampState:
        """The state once ``tokens`` (one a sequence) are appended."""
        is_timestamp = tokens >= timestamp_begin
        return TimestampState(
            is_timestamp,
            self.last_was_timestamp.copy() if self.sampled >= 1 else np.ones_like(is_timestamp),
            np.where(is_timestamp, tokens, self.last_timestamp),
            self.finish_below,
            self.sampled + 1,
        )

    def to_device(self) -> DeviceTimestampState:
        return DeviceTimestampState(
            mx.array(self.last_was_timestamp),
            mx.array(self.penultimate_was_timestamp),
            mx.array(self.last_timestamp),
            mx.array(self.finish_below),
            self.sampled,
        )

    def select(self, rows: np.ndarray) -> TimestampState:
        return TimestampState(
            self.last_was_timestamp[rows],
            self.penultimate_was_timestamp[rows],
            self.last_timestamp[rows],
            self.finish_below[rows],
            self.sampled,
        )

    def restarted(self, rows: np.ndarray, finish_below: np.ndarray) -> TimestampState:
        """``rows`` refilled with new sequences (``finish_below`` theirs) whose first token this step samples
        (masked apart, as a first step): their entries are set so that ``after`` gives each the state of one
        token sampled, as ``initial(...).after`` would (a penultimate of True, no timestamp before)."""
        last, last_ts, finish = self.last_was_timestamp.copy(), self.last_timestamp.copy(), self.finish_below.copy()
        last[rows], last_ts[rows], finish[rows] = True, -1, finish_below
        return TimestampState(last, self.penultimate_was_timestamp, last_ts, finish, self.sampled)

    def finishing_off(self, rows: np.ndarray) -> TimestampState:
        """The rules' view with ``rows``' finish rule off: rows with one token sampled (``LogitRules``: the rule
        starts at two), in a batch whose other rows are further on."""
        finish = self.finish_below.copy()
        finish[rows] = 0
        return TimestampState(
            self.last_was_timestamp, self.penultimate_was_timestamp, self.last_timestamp, finish, self.sampled
        )


@frozen(eq=False)
class DeviceTimestampState:
    """``TimestampState`` kept on the device: updated from the sampled tokens without the host reading them."""

    last_was_timestamp: mx.array  # bool (batch,)
    penultimate_was_timestamp: mx.array  # bool (batch,)
    last_timestamp: mx.array  # int32 (batch,), -1 if none
    finish_below: mx.array  # int32 (batch,)
    sampled: int = 0

    @classmethod
    def initial(cls, batch: int, finish_below: np.ndarray | None = None) -> DeviceTimestampState:
        finish = mx.zeros((batch,), mx.int32) if finish_below is None else mx.array(finish_below, mx.int32)
        return cls(mx.zeros((batch,), mx.bool_), mx.ones((batch,), mx.bool_), mx.full((batch,), -1, mx.int32), finish)

    def after(self, tokens: mx.array, timestamp_begin: int) -> DeviceTimestampState:
        is_timestamp = tokens >= timestamp_begin
        penultimate = self.last_was_timestamp if self.sampled >= 1 else mx.ones_like(is_timestamp)
        last = mx.where(is_timestamp, tokens.astype(mx.int32), self.last_timestamp)
        return DeviceTimestampState(is_timestamp, penultimate, last, self.finish_below, self.sampled + 1)

    def select(self, rows: mx.array) -> DeviceTimestampState:
        return DeviceTimestampState(
            self.last_was_timestamp[rows],
            self.penultimate_was_timestamp[rows],
            self.last_timestamp[rows],
            self.finish_below[rows],
            self.sampled,
        )

    def restarted(self, rows: mx.array, finish_below: np.ndarray) -> DeviceTimestampState:
        """As ``TimestampState.restarted``, on the device."""
        last, last_ts, finish = self.last_was_timestamp, self.last_timestamp, self.finish_below
        last, last_ts, finish = mx.array(last), mx.array(last_ts), mx.array(finish)  # new arrays: no aliasing
        last[rows] = True
        last_ts[rows] = -1
        finish[rows] = mx.array(finish_below, mx.int32)
        return DeviceTimestampState(last, self.penultimate_was_timestamp, last_ts, finish, self.sampled)

    def finishing_off(self, rows: mx.array) -> DeviceTimestampState:
        """As ``TimestampState.finishing_off``, on the device."""
        finish = mx.array(self.finish_below)
        finish[rows] = 0
        return DeviceTimestampState(
            self.last_was_timestamp, self.penultimate_was_timestamp, self.last_timestamp, finish, self.sampled
        )


class LogitRules:
    """Suppression and timestamp rules for one vocabulary; ``apply`` works for any batch size.

    One rule beyond openai-whisper's: a sequence whose last two tokens are timestamps (a segment closed and the
    next one opened) may not end there if the opening timestamp's token id is below its ``finish_below``. Whisper
    ends a window that way when it believes the opened segment runs past the window's end (sequential
    transcription then seeks to the opening timestamp); a window cut in a pause, with sound left after the
    opening, holds the whole segment, so the sequence must go on and transcribe it (``MlxWhisperDecoder``).
    """

    def __init__(
        self,
        n_vocab: int,
        eot: int,
        timestamp_begin: int,
        no_timestamps: int | None,
        suppress: Sequence[int],
        blank: Sequence[int],
        max_initial_timestamp_index: int | None,
        with_timestamps: bool = True,
        compiled: bool = False,
    ) -> None:
        self.eot = eot
        self.timestamp_begin = timestamp_begin
        self.with_timestamps = with_timestamps
        ids = np.arange(n_vocab)
        always = np.zeros(n_vocab, bool)
        always[list(suppress)] = True
        if no_timestamps is not None:
            always[no_timestamps] = True
        if not with_timestamps:
            always[timestamp_begin:] = True
        self.always = mx.array(always)
        self._always_ids = np.flatnonzero(always)  # numpy flavour: the columns, few but for no-timestamp decoding
        first = np.zeros(n_vocab, bool)
        first[list(blank)] = True  # suppress_blank: no leading space or end-of-text as the first token
        if with_timestamps:
            first[:timestamp_begin] = True  # the first sampled token is a timestamp
            if max_initial_timestamp_index is not None:
                first[timestamp_begin + max_initial_timestamp_index + 1 :] = True
        self.first = mx.array(first)
        self._first_host = first
        self.ids = mx.array(ids)
        self.is_timestamp = mx.array(ids >= timestamp_begin)
        self.is_text = mx.array(ids < eot)
        self.is_eot = mx.array(ids == eot)
        # one fused kernel for the elementwise mask (GPU): the rules' arrays are constants of the compiled graph
        self._later = mx.compile(self._mask_later) if compiled else self._mask_later
        # the lagged loop's greedy step after the first as one compiled function (GPU): ~25 small nodes become a few
        self._pick = mx.compile(self._pick_later) if compiled else self._pick_later

    def apply(self, logits: mx.array, state: TimestampState | DeviceTimestampState, first_step: bool) -> mx.array:
        """Mask ``logits`` (batch × vocab, float32) with -inf where a token is not allowed."""
        if isinstance(state, TimestampState):
            state = state.to_device()
        last, penultimate, last_ts = state.last_was_timestamp, state.penultimate_was_timestamp, state.last_timestamp
        if first_step:
            return self._mask(logits, last, penultimate, last_ts, mx.zeros_like(last_ts), self.first)
        # after one token "both were timestamps" is only the initial state's: the rule starts at two
        finish = state.finish_below if state.sampled >= 2 else mx.zeros_like(last_ts)
        result: mx.array = self._later(logits, last, penultimate, last_ts, finish)
        return result

    def pick(self, logits: mx.array, state: DeviceTimestampState) -> tuple[mx.array, mx.array, DeviceTimestampState]:
        """A greedy step after the first: the best token under the mask, its scores (3 × rows, float32: the token,
        its log-probability under the mask, its probability among text tokens, as ``device_scores``) and the state
        after it. One compiled function where the rules are compiled: each of a step's nodes costs the host a few µs
        to evaluate, and on a GPU this bookkeeping is a step's only work besides the forward."""
        last = state.last_was_timestamp
        finish = state.finish_below if state.sampled >= 2 else mx.zeros_like(state.last_timestamp)
        chosen, scores, is_timestamp, last_timestamp = self._pick(
            logits, last, state.penultimate_was_timestamp, state.last_timestamp, finish
        )
        penultimate = last if state.sampled >= 1 else mx.ones_like(is_timestamp)
        after = DeviceTimestampState(is_timestamp, penultimate, last_timestamp, state.finish_below, state.sampled + 1)
        return chosen, scores, after

    def _pick_later(
        self, logits: mx.array, last: mx.array, penultimate: mx.array, last_ts: mx.array, finish: mx.array
    ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        masked = self._mask(logits, last, penultimate, last_ts, finish, None)
        chosen = mx.argmax(masked, axis=-1)
        scores = step_scores(masked, logits, chosen, self.eot)
        is_timestamp = chosen >= self.timestamp_begin
        return chosen, scores, is_timestamp, mx.where(is_timestamp, chosen.astype(mx.int32), last_ts)

    def apply_host(self, logits: NDArray[np.float32], state: TimestampState, first_step: bool) -> NDArray[np.float32]:
        """``apply`` in numpy (the CPU backend, where MLX's elementwise kernels are slow): the same mask, built
        from column slices and a few rows instead of vocabulary-wide boolean arrays; a new array."""
        masked: NDArray[np.float32] = logits.copy()  # typed: numpy's stubs give Any here for Python 3.10
        masked[:, self._always_ids] = -np.inf
        if first_step:
            masked[:, self._first_host] = -np.inf
        if not self.with_timestamps:
            return masked
        begin = self.timestamp_begin
        last, penultimate, last_ts = state.last_was_timestamp, state.penultimate_was_timestamp, state.last_timestamp
        masked[last & penultimate, begin:] = -np.inf  # timestamps come in pairs, except directly before end-of-text
        masked[last & ~penultimate, : self.eot] = -np.inf
        if state.sampled >= 2:  # a segment opened with sound enough after it is transcribed here
            masked[last & penultimate & (last_ts < state.finish_below), self.eot] = -np.inf
        # timestamps never decrease, and a segment has non-zero length
        floor = np.where(last_ts >= 0, np.where(last & ~penultimate, last_ts, last_ts + 1), 0)
        timestamps = masked[:, begin:]  # a view
        timestamps[np.arange(begin, masked.shape[1]) < floor[:, None]] = -np.inf
        # when the timestamps together are likelier than any single text token, sample a timestamp
        masked[logsumexp(timestamps) > masked[:, :begin].max(axis=-1), :begin] = -np.inf
        return masked

    def _mask_later(
        self, logits: mx.array, last: mx.array, penultimate: mx.array, last_ts: mx.array, finish: mx.array
    ) -> mx.array:
        return self._mask(logits, last, penultimate, last_ts, finish, None)

    def _mask(
        self,
        logits: mx.array,
        last: mx.array,
        penultimate: mx.array,
        last_ts: mx.array,
        finish: mx.array,
        first: mx.array | None,
    ) -> mx.array:
        forbid = self.always if first is None else self.always | first
        if self.with_timestamps:
            opened = (last & penultimate & (last_ts < finish))[:, None]
            last, penultimate = last[:, None], penultimate[:, None]
            # timestamps come in pairs, except directly before end-of-text
            forbid = forbid | (last & penultimate & self.is_timestamp) | (last & ~penultimate & self.is_text)
            forbid = forbid | (opened & self.is_eot)  # a segment opened with sound enough after it goes on
            # timestamps never decrease, and a segment has non-zero length
            floor = mx.where(last[:, 0] & ~penultimate[:, 0], last_ts, last_ts + 1)
            floor = mx.where(last_ts >= 0, floor, 0)
            forbid = forbid | (self.is_timestamp & (self.ids < floor[:, None]))
        logits = mx.where(forbid, -mx.inf, logits)
        if self.with_timestamps:
            # when the timestamps together are likelier than any single text token, sample a timestamp
            # (openai-whisper compares log-probabilities; the log-sum-exp over the whole vocabulary that both sides
            # would subtract cancels out, and costs a vocabulary of exponentials per row and step)
            timestamp_mass = mx.logsumexp(logits[:, self.timestamp_begin :], axis=-1, keepdims=True)
            max_text = mx.max(logits[:, : self.timestamp_begin], axis=-1, keepdims=True)
            logits = mx.where((timestamp_mass > max_text) & ~self.is_timestamp, -mx.inf, logits)
        return logits


def device_scores(masked: mx.array, logits: mx.array, chosen: mx.array, eot: int) -> tuple[mx.array, mx.array]:
    """Each row's chosen token's log-probability under the rules' mask, and its probability among text tokens."""
    index = chosen[:, None]
    logprob = mx.take_along_axis(masked, index, axis=-1)[:, 0] - mx.logsumexp(masked, axis=-1)
    probability = mx.exp(mx.take_along_axis(logits, index, axis=-1)[:, 0] - mx.logsumexp(logits[:, :eot], axis=-1))
    return logprob, probability


def step_scores(masked: mx.array, logits: mx.array, chosen: mx.array, eot: int) -> mx.array:
    """A step's one array for the host to read (3 × rows, float32): the chosen tokens (ids are exact in float32:
    vocabularies are far below 2**24) and their ``device_scores``."""
    logprob, probability = device_scores(masked, logits, chosen, eot)
    return mx.stack([chosen.astype(mx.float32), logprob.astype(mx.float32), probability.astype(mx.float32)])


def logsumexp(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Row-wise log-sum-exp of a 2-D array; ``-inf`` for a row of ``-inf`` only."""
    top = x.max(axis=-1, keepdims=True)
    finite = np.isfinite(top)
    shift = np.where(finite, top, 0)
    with np.errstate(under="ignore", divide="ignore"):
        total = np.log(np.exp(x - shift).sum(axis=-1, keepdims=True)) + shift
    return np.asarray(np.where(finite, total, top)[:, 0], dtype=np.float32)
