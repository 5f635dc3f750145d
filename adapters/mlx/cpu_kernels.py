"""Whisper's audio encoder and the decoder's elementwise-heavy math in numpy, for the CPU backend.

MLX's CPU kernels for ``exp``/``erf`` are not vectorised, and scipy's ``erf`` is scalar code too (~18 ns an
element here, against ~1 ns for numpy's SIMD ``exp``/``tanh``). So the GELU's ``erf`` is evaluated here as the
rational approximation that XLA and Eigen use for float32 (``generic_fast_erf_float``: odd degree-13 over even
degree-8 polynomial, clamped to [-4, 4], within 1.4e-6 of float64's GELU), as plain numpy arithmetic. numpy runs
each operation as its own pass over memory, so the work goes in blocks small enough for a core's L2 cache, and
the blocks are shared out among threads (numpy releases the GIL in its loops and BLAS calls)
(``docs/performance.md`` #30-#31).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor, wait
from typing import Protocol, TypeVar

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

T = TypeVar("T")

GELU_BLOCK = 32768  # elements: three float32 buffers of this size (384 KB) stay in a 1 MB L2
ATTENTION_ROWS = 256  # query rows a block: 256 × 1500 float32 scores (1.5 MB), measured best of 32-256

# erf(z) ~= z * P(z²) / Q(z²) on [-4, 4] (erf(±4) is ±1 in float32); highest power first, for Horner's rule
_ERF_P = np.array(
    [
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    ],
    dtype=np.float32,
)
_ERF_Q = np.array(
    [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02],
    dtype=np.float32,
)


def gelu(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """The exact GELU, ``x * (1 + erf(x / sqrt(2))) / 2``, of a float32 array (a new array)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(flat)
    z = np.empty(min(GELU_BLOCK, flat.size), dtype=np.float32)
    z2 = np.empty_like(z)
    for start in range(0, flat.size, GELU_BLOCK):
        stop = min(start + GELU_BLOCK, flat.size)
        _gelu_block(flat[start:stop], out[start:stop], z[: stop - start], z2[: stop - start])
    return out.reshape(np.shape(x))


def _gelu_block(
    x: NDArray[np.float32], out: NDArray[np.float32], z: NDArray[np.float32], z2: NDArray[np.float32]
) -> None:
    """``out = gelu(x)``, with ``z`` and ``z2`` as scratch; every operation in place."""
    np.multiply(x, np.float32(0.7071067811865476), out=z)
    np.clip(z, -4.0, 4.0, out=z)
    np.multiply(z, z, out=z2)
    p = out  # numerator, then erf, then the GELU
    np.multiply(z2, _ERF_P[0], out=p)
    p += _ERF_P[1]
    for coefficient in _ERF_P[2:]:
        p *= z2
        p += coefficient
    p *= z
    q = z  # z is not needed past this point: the denominator takes its place
    np.multiply(z2, _ERF_Q[0], out=q)
    q += _ERF_Q[1]
    for coefficient in _ERF_Q[2:]:
        q *= z2
        q += coefficient
    p /= q
    p += np.float32(1.0)
    p *= x
    p *= np.float32(0.5)


def attention(
    q: NDArray[np.float32], k: NDArray[np.float32], v: NDArray[np.float32], pool: Executor | None = None
) -> NDArray[np.float32]:
    """``softmax(q @ kᵀ) @ v``, (windows × heads) × frames × dh each (the scale already in ``q``); the heads are
    shared out among ``pool``'s threads (numpy releases the GIL in its loops and matmuls).

    Per head, in blocks of ``ATTENTION_ROWS`` queries over a contiguous ``kᵀ``: a block's scores stay in cache
    through the max and ``exp``, and the softmax's normalisation divides the (frames × dh) output instead of the
    scores: ``softmax(s) @ v = (exp(s - max) @ v) / sum(exp(s - max))``, the sums coming out of the same matmul
    as a column of ones beside ``v`` (one pass over the scores fewer).
    """
    shape = q.shape
    q, k, v = (a.reshape(-1, *shape[-2:]) for a in (q, k, v))
    out = np.empty_like(q)
    dh = q.shape[-1]

    def head(index: int) -> None:
        frames = q.shape[1]
        scores = np.empty((min(ATTENTION_ROWS, frames), k.shape[1]), dtype=np.float32)
        kt = np.ascontiguousarray(k[index].T)
        v_ones = np.ones((k.shape[1], dh + 1), np.float32)  # v, and a column of ones for the softmax's sums
        v_ones[:, :dh] = v[index]
        for start in range(0, frames, ATTENTION_ROWS):
            stop = min(start + ATTENTION_ROWS, frames)
            block = scores[: stop - start]
            np.matmul(q[index, start:stop], kt, out=block)
            block -= block.max(axis=-1, keepdims=True)
            np.exp(block, out=block)
            weighted = block @ v_ones
            np.divide(weighted[:, :dh], weighted[:, dh:], out=out[index, start:stop])

    run_all(pool, head, range(len(q)))
    return out.reshape(shape)


def softmax_times(scores: NDArray[np.float32], v: NDArray[np.float32]) -> NDArray[np.float32]:
    """``softmax(scores) @ v`` over the last axis, with ``scores`` overwritten: the exponentials are taken in place
    and the normalisation divides the (much smaller) product, not the scores."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    out: NDArray[np.float32] = np.matmul(scores, v) / scores.sum(axis=-1, keepdims=True)
    return out


ROW_BLOCK = 256  # encoder frames a task: its layer norm, projections and MLP stay in one core's cache
FEW_ROWS = 64  # a decoder step's batch: measured at 8 and 16 rows, (weight @ xᵀ)ᵀ takes half x @ weightᵀ's time
LAYER_NORM_EPS = 1e-5  # mlx.nn.LayerNorm's default, as in mlx-whisper's model


@frozen
class Linear:
    weight_t: NDArray[np.float32]  # in × out (the transpose of the model's out × in, a view)
    bias: NDArray[np.float32] | None

    def __call__(self, x: NDArray[np.float32], out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """``x @ weightᵀ + bias`` over the last axis, as one 2-D matmul (numpy runs a stacked one as a loop)."""
        rows = x.reshape(-1, x.shape[-1])
        result: NDArray[np.float32]
        if out is None and len(rows) <= FEW_ROWS:  # (weight @ xᵀ)ᵀ: OpenBLAS is ~2x faster this way round
            result = np.matmul(self.weight_t.T, rows.T).T
        else:
            target = None if out is None else out.reshape(len(rows), -1)  # a view of a contiguous ``out``
            result = np.matmul(rows, self.weight_t, out=target)
        if self.bias is not None:
            result += self.bias
        return result.reshape(*x.shape[:-1], result.shape[-1])


@frozen
class LayerNorm:
    weight: NDArray[np.float32]
    bias: NDArray[np.float32]

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        centred: NDArray[np.float32] = x - x.mean(axis=-1, keepdims=True)
        variance = np.square(centred).mean(axis=-1, keepdims=True)
        centred *= 1 / np.sqrt(variance + np.float32(LAYER_NORM_EPS))
        centred *= self.weight
        centred += self.bias
        return centred


@frozen
class EncoderBlock:
    attn_ln: LayerNorm
    query: Linear
    key: Linear
    value: Linear
    out: Linear
    mlp_ln: LayerNorm
    mlp1: Linear
    mlp2: Linear


@frozen
class EncoderWeights:
    """Whisper's audio encoder as numpy arrays (views of the model's own weights where the layout allows)."""

    conv1: Linear  # (3 × mels) × state: the kernel's taps flattened, for im2col
    conv2: Linear  # (3 × state) × state
    positional: NDArray[np.float32]  # frames × state
    blocks: tuple[EncoderBlock, ...]
    ln_post: LayerNorm
    n_head: int


def encode(weights: EncoderWeights, mels: NDArray[np.float32], pool: Executor | None = None) -> NDArray[np.float32]:
    """Whisper's audio encoder (windows × 3000 frames × mels -> windows × 1500 × state) in numpy.

    Everything but the self-attention and the convolutions' neighbouring frames is row-wise, so each layer is two
    passes over blocks of ``ROW_BLOCK`` frames of a window, shared out among ``pool``'s threads (layer norm and q,
    k, v, each written straight into its heads' layout; then the output projection of the heads' outputs read
    back from theirs, layer norm and MLP with both residuals), with the attention (``attention``, per window and
    head) between them. Each thread's BLAS calls should run on one thread (``threadpoolctl``): the parallelism is
    the pool's.
    """
    run = _runner(pool)
    windows = mels.shape[0]
    x = _conv(mels, weights.conv1, stride=1, run=run)  # windows × 3000 × state
    x = _conv(x, weights.conv2, stride=2, run=run)  # windows × 1500 × state
    x += weights.positional[: x.shape[1]]
    frames, state = x.shape[1:]
    heads = weights.n_head
    dh = state // heads
    rows = x.reshape(-1, state)  # a view: row blocks write through to x
    q, k, v = (np.empty((windows, heads, frames, dh), np.float32) for _ in range(3))
    scale = np.float32(dh**-0.5)
    tiles = [  # (window, frames): the row blocks of each window
        (window, slice(f, min(f + ROW_BLOCK, frames))) for window in range(windows) for f in range(0, frames, ROW_BLOCK)
    ]

    def of(window: int, part: slice) -> slice:
        """The rows of ``rows`` that hold frames ``part`` of ``window``."""
        return slice(window * frames + part.start, window * frames + part.stop)

    def per_head(y: NDArray[np.float32]) -> NDArray[np.float32]:
        """frames × state -> heads × frames × dh (a view)."""
        result: NDArray[np.float32] = y.reshape(len(y), heads, dh).transpose(
            1, 0, 2
        )  # a typed name: numpy's stubs give Any here for Python 3.10
        return result

    for block in weights.blocks:

        def project(item: tuple[int, slice], block: EncoderBlock = block) -> None:
            window, part = item
            h = block.attn_ln(rows[of(window, part)])
            query = block.query(h)
            query *= scale
            q[window, :, part] = per_head(query)
            k[window, :, part] = per_head(block.key(h))
            v[window, :, part] = per_head(block.value(h))

        run_all(pool, project, tiles)
        attended = attention(q, k, v, pool)  # windows × heads × frames × dh

        def mlp(item: tuple[int, slice], block: EncoderBlock = block) -> None:
            window, part = item
            y = rows[of(window, part)]
            y += block.out(attended[window, :, part].transpose(1, 0, 2).reshape(-1, state))
            y += block.mlp2(gelu(block.mlp1(block.mlp_ln(y))))

        run_all(pool, mlp, tiles)
    result = np.empty_like(rows)

    def final(part: slice) -> None:
        result[part] = weights.ln_post(rows[part])

    run(final, len(rows))
    return result.reshape(windows, frames, state)


def _conv(x: NDArray[np.float32], linear: Linear, stride: int, run: _Runner) -> NDArray[np.float32]:
    """A kernel-3, padding-1 convolution over frames (windows × frames × channels) as im2col and a matmul, with
    the GELU that follows each of Whisper's convolutions; ``linear``'s rows are the taps' channels, tap-major."""
    windows, frames, channels = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    out_frames = (frames - 1) // stride + 1
    span = stride * (out_frames - 1) + 1
    cols = np.concatenate([padded[:, tap : tap + span : stride] for tap in range(3)], axis=-1)
    cols = cols.reshape(windows * out_frames, 3 * channels)
    out = np.empty((len(cols), linear.weight_t.shape[1]), dtype=np.float32)

    def part(rows: slice) -> None:
        out[rows] = gelu(linear(cols[rows]))

    run(part, len(out))
    return out.reshape(windows, out_frames, -1)


class _Runner(Protocol):
    def __call__(self, task: Callable[[slice], None], rows: int) -> None: ...


def _runner(pool: Executor | None) -> _Runner:
    """Runs ``task`` over blocks of ``ROW_BLOCK`` rows, on ``pool``'s threads if there is one."""

    def run(task: Callable[[slice], None], rows: int) -> None:
        run_all(pool, task, [slice(start, min(start + ROW_BLOCK, rows)) for start in range(0, rows, ROW_BLOCK)])

    return run


def run_all(pool: Executor | None, task: Callable[[T], None], items: Iterable[T]) -> None:
    """``task`` on each item, on ``pool``'s threads if there is one (else here, in order); the first error raised
    is raised here once all have run."""
    if pool is None:
        for item in items:
            task(item)
        return
    futures = [pool.submit(task, item) for item in items]
    wait(futures)  # all, even after a failure: the tasks write into the caller's buffers
    for done in futures:
        done.result()
