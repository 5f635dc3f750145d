"""Continuous batching: a row whose sequence has ended takes the next waiting window, so the batch stays full until
the windows run out.

The loops of ``loop.py`` decode one batch: as its sequences end the batch shrinks, and the last steps run a few
rows. Here the windows of a call wait in a queue (``Admit``): when rows free up, that many windows are encoded and
prompted together as a step of their own, and ``DecoderStep.put`` moves them into the freed rows, each at its own
positions from 0 (its learned positional embedding and its own self-attention mask: ``step/``). The new rows'
first token is masked as a first step (``LogitRules``' first-token rules) beside the others' later steps, and the
timestamp rules' state of those rows restarts (``TimestampState.restarted``). A freed row steps once more with its
ended sequence's token (ignored) before it is refilled: the lagged loop has already queued that step when it reads
the end, and the synced loop keeps the two loops' order. Rows free with none waiting leave the batch as before.

Greedy decoding only: a sampled pass (temperature fallback) draws one key a step for the whole batch, so its draws
depend on the batch's make-up; ``MlxWhisperDecoder`` decodes the windows that fall back together, as before.

Bounded traces: on the GPU the compiled step (``step.kernels``) is traced once per batch size and cache capacity.
The lagged loop keeps its batch at one of ``buckets(rows)`` sizes (the batch and its halvings: 1 + log2 of it):
ended rows stay in the batch, ignored, until the live ones fit the next bucket down, and the batch is then cut to
that bucket, finished rows filling it up.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any, Generic, TypeVar

import mlx.core as mx
import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from onepass_whisper.adapters.mlx.loop import BatchResults, DeviceRows, LaggedReads, _token_scores, choose
from onepass_whisper.adapters.mlx.rules import DeviceTimestampState, LogitRules, TimestampState, step_scores
from onepass_whisper.adapters.mlx.step import DecoderStep

Array = TypeVar("Array")


@frozen(eq=False)
class Admitted(Generic[Array]):
    """Windows taken from the queue, encoded and prompted: their own step, to be ``put`` into freed rows."""

    sequences: NDArray[np.int64]  # the windows' indices (the sequences of ``BatchResults``)
    step: DecoderStep[Array]  # their step, the prompt fed
    logits: Array  # rows × vocab: their first token's logits
    attention: Array  # rows × heads × frames: the prompt's last position's captured row
    finish_below: NDArray[np.int64]  # ``LogitRules``' bound, one a window


# up to ``count`` waiting windows, admitted; None once none wait
Admit = Callable[[int], "Admitted[Any] | None"]


def buckets(rows: int) -> list[int]:
    """The batch sizes the lagged loop steps at: ``rows`` and its halvings down to 1, largest first."""
    sizes = [rows]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def bucket(live: int, rows: int) -> int:
    """The smallest of ``buckets(rows)`` that holds ``live`` rows (0 for none)."""
    return 0 if live == 0 else min(size for size in buckets(rows) if size >= live)


def decode_refilled_synced(admit: Admit, rows: int, rules: LogitRules, results: BatchResults) -> list[int]:
    """``decode_synced``'s loop (numpy, a ``HostStep``) over every waiting window, ``rows`` at a time, greedy;
    returns the batch size of each step."""
    eot, begin = rules.eot, rules.timestamp_begin
    first: Admitted[NDArray[Any]] | None = admit(rows)
    sizes: list[int] = []
    if first is None:
        return sizes
    state = first.step
    active = first.sequences.copy()  # row -> sequence
    logits, attention = first.logits, first.attention
    ts_state = TimestampState.initial(len(active), first.finish_below)
    fresh = np.arange(len(active))  # rows whose next token is their sequence's first
    young = fresh[:0]  # rows whose sequence has one token: the finish rule off
    while len(active):
        view = ts_state.finishing_off(young) if len(young) else ts_state
        masked = rules.apply_host(logits, view, first_step=ts_state.sampled == 0)
        if ts_state.sampled and len(fresh):
            starting = TimestampState.initial(len(fresh), ts_state.finish_below[fresh])
            masked[fresh] = rules.apply_host(logits[fresh], starting, first_step=True)
        tokens = masked.argmax(axis=-1)
        logprobs, probabilities = _token_scores(masked, logits, tokens, eot)
        results.add(active, attention, tokens, logprobs, probabilities)
        ts_state = ts_state.after(tokens, begin)
        young, fresh = fresh, fresh[:0]
        free = np.flatnonzero(results.finished(active))
        new: Admitted[NDArray[Any]] | None = admit(len(free)) if len(free) else None
        into = free[: 0 if new is None else len(new.sequences)]
        gone = free[len(into) :]
        if len(gone):  # none waiting for these rows: they leave the batch before the step
            keep = np.setdiff1d(np.arange(len(active)), gone)
            if not len(keep):
                break
            state.keep(keep)
            ts_state = ts_state.select(keep)
            active, tokens = active[keep], tokens[keep]
            young = np.flatnonzero(np.isin(keep, young))
            into = np.flatnonzero(np.isin(keep, into))
        logits_list, attention = state.step(tokens[:, None])
        logits = logits_list[0]
        sizes.append(len(active))
        if new is not None:
            state.put(into, new.step)
            logits[into], attention[into] = new.logits, new.attention
            ts_state = ts_state.restarted(into, new.finish_below)
            active[into] = new.sequences
            fresh = into
            young = np.setdiff1d(young, into)
    return sizes


def decode_refilled_lagged(
    admit: Admit, rows: int, rules: LogitRules, results: BatchResults, bucketed: bool = True
) -> list[int]:
    """``decode_lagged``'s loop (the device kept busy, the host reading every ``READ_EVERY`` steps) over every
    waiting window, ``rows`` at a time, greedy; a row is refilled at the read that finds its sequence ended.

    ``bucketed``: the batch kept at ``buckets(rows)`` sizes (else cut to its live rows at each read that finds
    one ended, with none waiting). Returns the batch size of each step (what the compiled step was traced for).
    """
    eot, begin = rules.eot, rules.timestamp_begin
    first: Admitted[mx.array] | None = admit(rows)
    if first is None:
        return []
    state = first.step
    active = first.sequences.copy()  # row -> sequence
    rows = len(active)  # fewer than asked where fewer windows wait: the buckets are this batch's
    columns = np.arange(len(active))  # row -> its column of ``DeviceRows``
    results.place(active, columns, 0)
    device_rows = DeviceRows(len(active))
    logits, attention = first.logits, first.attention
    ts_state = DeviceTimestampState.initial(len(active), first.finish_below)
    fresh = np.arange(len(active))
    young = fresh[:0]
    reads = LaggedReads()
    sizes: list[int] = []
    on_device = mx.array(columns)
    for step in count():  # ends when no row is live
        view = ts_state.finishing_off(mx.array(young)) if len(young) else ts_state
        masked = rules.apply(logits, view, first_step=step == 0)
        if step and len(fresh):
            index = mx.array(fresh)
            starting = DeviceTimestampState(*_initial_parts(len(fresh)), view.finish_below[index])
            masked[index] = rules.apply(logits[index], starting, first_step=True)
        chosen = choose(masked, 0.0, step)
        scores = step_scores(masked, logits, chosen, eot)
        block = device_rows.write(on_device, attention)
        ts_state = ts_state.after(chosen, begin)
        logits_list, attention = state.step(chosen[:, None])
        logits = logits_list[0]
        sizes.append(len(active))
        mx.async_eval(scores, block, logits, attention, *reads.add(active, scores))  # type: ignore[no-untyped-call]
        young, fresh = fresh, fresh[:0]
        if not reads.due():  # the newest step stays unread: the device is still on it
            continue
        reads.read(results)
        ended = results.finished(active)
        free = np.flatnonzero(ended)
        new: Admitted[mx.array] | None = admit(len(free)) if len(free) else None
        if new is not None:
            into = free[: len(new.sequences)]
            index = mx.array(into)
            state.put(index, new.step)
            logits[index], attention[index] = new.logits, new.attention
            ts_state = ts_state.restarted(index, new.finish_below)
            active = active.copy()  # the unread step keeps its own
            active[into] = new.sequences
            results.place(new.sequences, columns[into], device_rows.steps)
            fresh, young = into, np.setdiff1d(young, into)
            ended = results.finished(active)
        live = int((~ended).sum())
        if live == 0:
            break  # the last step queued is not needed
        size = bucket(live, rows) if bucketed else live
        if size < len(active):  # the live rows, and ended ones up to the bucket's size (ignored)
            keep = np.sort(np.concatenate([np.flatnonzero(~ended), np.flatnonzero(ended)[: size - live]]))
            kept = mx.array(keep)
            state.keep(kept)
            ts_state = ts_state.select(kept)
            logits, attention = logits[kept], attention[kept]
            active, columns = active[keep], columns[keep]
            on_device = mx.array(columns)
            young = np.flatnonzero(np.isin(keep, young))
            fresh = np.flatnonzero(np.isin(keep, fresh))
    if results.rows_on_device:
        results.device_rows = device_rows.whole()
    else:
        results.set_rows(device_rows.read())
    return sizes


def _initial_parts(count: int) -> tuple[mx.array, mx.array, mx.array]:
    """``DeviceTimestampState.initial``'s arrays but ``finish_below``: nothing sampled yet."""
    state = DeviceTimestampState.initial(count)
    return state.last_was_timestamp, state.penultimate_was_timestamp, state.last_timestamp
