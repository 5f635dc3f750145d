"""A one-token decoder step's attention as custom CUDA kernels (MLX's CUDA backend): one graph node a layer each.

On the GPU the decoder step is host-bound: MLX evaluates and launches every graph node one by one, and a layer of
``forward.DecoderState`` is ~38 nodes (head splits and merges, cache slices, the scale, two matmuls and a softmax,
the alignment heads' slices), ~1200 a step at large-v3's 32 layers (``docs/performance.md`` #22, #54, #58). Here
each attention of a layer is one kernel that reads its operands where the linears left them:

- ``cross_attention``: one block a (sequence, head) scores the query against the window's 1500 keys, keeps the
  scores of the alignment heads (the captured QK, before the softmax, as ``DecoderState`` gives it), and sums the
  values under the softmax; K and V are read once each, 16 bytes a thread at a time.
- ``self_attention``: the same over the self-attention cache of the positions so far (K and V side by side in one
  position-major buffer), whose newest position the kernel itself writes, in place, from the key and value thirds
  of the step's one query-key-value linear.

The linears of a step's few rows are one kernel too (``linear``): the layer norm before, the bias, GELU and the
residual after, and K split over more blocks where the columns are few.

Queries are read where the linears left them (batch × 1 × state, or the first third of batch × 1 × 3·state) and the
output is written merged (batch × 1 × state), so no head split or merge is needed either side. Scores, softmax and
sums are float32.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import mlx.core as mx

THREADS = 256  # a block's threads: eight warps, each reading four keys (fp16) at a time

_CONSTANTS = """
    constexpr int VEC = 16 / sizeof(T);  // elements in a 16-byte load
    constexpr int TPK = DH / VEC;        // threads sharing a key (or value) row
    constexpr int KPI = THREADS / TPK;   // rows a block reads an iteration
    constexpr int D = H * DH;
    constexpr int UNROLL = 4;            // rows a thread loads before it uses them
    static_assert(DH % VEC == 0 && 32 % TPK == 0, "head size must split into 16-byte loads within a warp");
    const int b = blockIdx.x / H, h = blockIdx.x % H, tid = threadIdx.x;
"""

_BODY = """
    __shared__ float query[DH];
    __shared__ float weights[ROWS];
    __shared__ float partial[KPI][DH];
    __shared__ float reduce[THREADS / 32];
    const int lane = tid % TPK, slot = tid / TPK, warp = tid / 32;
    if (tid < DH) query[tid] = static_cast<float>(q[(size_t)b * QSTRIDE + h * DH + tid]) * rsqrtf((float)DH);
    __syncthreads();
    float qv[VEC];
    #pragma unroll
    for (int i = 0; i < VEC; ++i) qv[i] = query[lane * VEC + i];
    // scores: a key row is TPK threads' 16-byte loads, summed across those lanes; UNROLL rows' loads are issued
    // before any is used, so that each thread keeps that many in flight
    float top = __int_as_float(0xff800000);  // -infinity
    for (int t0 = 0; t0 < length; t0 += UNROLL * KPI) {
        uint4 raw[UNROLL];
        #pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int t = t0 + u * KPI + slot;
            raw[u] = t < length ? *reinterpret_cast<const uint4*>(key_row(t) + lane * VEC) : make_uint4(0, 0, 0, 0);
        }
        #pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const T* kv = reinterpret_cast<const T*>(&raw[u]);
            float s = 0.0f;
            #pragma unroll
            for (int i = 0; i < VEC; ++i) s += qv[i] * static_cast<float>(kv[i]);
            #pragma unroll
            for (int o = TPK / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
            const int t = t0 + u * KPI + slot;
            if (t < length) {
                if (lane == 0) weights[t] = s;
                top = fmaxf(top, s);
            }
        }
    }
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) top = fmaxf(top, __shfl_xor_sync(0xffffffff, top, o));
    if (tid % 32 == 0) reduce[warp] = top;
    __syncthreads();
    top = reduce[0];
    #pragma unroll
    for (int w = 1; w < THREADS / 32; ++w) top = fmaxf(top, reduce[w]);
    /*CAPTURE*/
    float total = 0.0f;
    for (int t = tid; t < length; t += THREADS) {
        const float e = expf(weights[t] - top);
        weights[t] = e;
        total += e;
    }
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffff, total, o);
    __syncthreads();  // every warp has read reduce[] for the maximum
    if (tid % 32 == 0) reduce[warp] = total;
    __syncthreads();
    total = 0.0f;
    #pragma unroll
    for (int w = 0; w < THREADS / 32; ++w) total += reduce[w];
    // output: each thread sums its rows' VEC values under the weights; then the KPI partial sums per element
    float acc[VEC];
    #pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = 0.0f;
    for (int t0 = 0; t0 < length; t0 += UNROLL * KPI) {
        uint4 raw[UNROLL];
        #pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int t = t0 + u * KPI + slot;
            raw[u] = t < length ? *reinterpret_cast<const uint4*>(value_row(t) + lane * VEC) : make_uint4(0, 0, 0, 0);
        }
        #pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int t = t0 + u * KPI + slot;
            const float p = t < length ? weights[t] : 0.0f;
            const T* vv = reinterpret_cast<const T*>(&raw[u]);
            #pragma unroll
            for (int i = 0; i < VEC; ++i) acc[i] += p * static_cast<float>(vv[i]);
        }
    }
    #pragma unroll
    for (int i = 0; i < VEC; ++i) partial[slot][lane * VEC + i] = acc[i];
    __syncthreads();
    /*FINISH*/
"""

# one block a (sequence, head): its sums are the output
_FINISH = """
    if (tid < DH) {
        float sum = 0.0f;
        #pragma unroll 8
        for (int j = 0; j < KPI; ++j) sum += partial[j][tid];
        out[(size_t)b * D + h * DH + tid] = static_cast<T>(sum / total);
    }
"""

# split over frames (grid y = S parts of the window): each part leaves its maximum, its total under that maximum and
# its unnormalised sums in the workspace, then takes a ticket from its (sequence, head)'s counter; the part with the
# last ticket rescales the S parts to their common maximum, in part order (the result does not depend on which part
# came last), writes the output and sets the counter back to zero for the next launch: the split linear's ticket
# (``_LINEAR_SPLIT_TAIL``), whose fences and L2 loads this follows
_SPLIT_FINISH = """
    static_assert(S > 1, "the split finish is for S > 1");
    __shared__ bool last;
    constexpr int SLOT = DH + 2;  // a part's maximum, total, then its DH sums
    float* mine = ws + ((size_t)blockIdx.x * S + blockIdx.y) * SLOT;
    if (tid < DH) {
        float sum = 0.0f;
        #pragma unroll 8
        for (int j = 0; j < KPI; ++j) sum += partial[j][tid];
        mine[2 + tid] = sum;
    }
    if (tid == 0) {
        mine[0] = top;
        mine[1] = total;
    }
    __threadfence();
    __syncthreads();
    unsigned int* counter = reinterpret_cast<unsigned int*>(const_cast<uint32_t*>(counters)) + blockIdx.x;
    if (tid == 0) last = atomicAdd(counter, 1u) == (unsigned int)(S - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (tid < DH) {
        const float* parts = ws + (size_t)blockIdx.x * S * SLOT;
        float common = __int_as_float(0xff800000);
        #pragma unroll
        for (int z = 0; z < S; ++z) common = fmaxf(common, __ldcg(parts + z * SLOT));
        float all = 0.0f, sum = 0.0f;
        #pragma unroll
        for (int z = 0; z < S; ++z) {
            const float scale = expf(__ldcg(parts + z * SLOT) - common);
            all += scale * __ldcg(parts + z * SLOT + 1);
            sum += scale * __ldcg(parts + z * SLOT + 2 + tid);
        }
        out[(size_t)b * D + h * DH + tid] = static_cast<T>(sum / all);
    }
    if (tid == 0) *counter = 0u;
"""

# the alignment heads' scores (before the softmax) of this layer, in ascending head order: slot = heads below h.
# Each thread copies the scores it turns into weights next, so no barrier is needed either side.
_CAPTURE = """
    if ((CAPTURED >> h) & 1) {
        const int captured = __popc(CAPTURED & ((1u << h) - 1u));
        T* row = qk + ((size_t)b * __popc(CAPTURED) + captured) * FRAMES + first;
        for (int t = tid; t < length; t += THREADS) row[t] = static_cast<T>(weights[t]);
    }
"""

_CROSS = """
    // the part of the window's FRAMES audio frames this block attends to: all of them, or its ROWS of them (split)
    const int first = blockIdx.y * ROWS, length = min(ROWS, FRAMES - first);
    constexpr int QSTRIDE = D;
    const T* keys = k + ((size_t)b * FRAMES + first) * D + h * DH;
    const T* values = v + ((size_t)b * FRAMES + first) * D + h * DH;
    auto key_row = [&](int t) { return keys + (size_t)t * D; };
    auto value_row = [&](int t) { return values + (size_t)t * D; };
"""

# The step's own key and value come from its query-key-value row, and the block copies its head's part of them
# into the cache at this position IN PLACE, for the steps after: the cache is an input that the kernel writes, so
# MLX's graph does not know of the write. That is safe here because the decoder state owns the buffer alone, every
# later reader of it (the next steps' kernels, the batch's compaction, the cache's growth) is queued on the same
# stream after this kernel, and no block reads what another writes (a block writes its own head's slice of one
# position and reads only earlier positions of it). A functional write (``mx.slice_update``) with the position as
# an array cost a copy kernel of ~75 µs a layer at batch 64 (``docs/performance.md`` #77).
_SELF = """
    const int length = positions[b];  // this row's positions so far, this step's included
    constexpr int STRIDE = 2 * D;     // a position's key, then its value
    constexpr int QSTRIDE = 3 * D;    // the query: the first third of the step's query-key-value row
    const int capacity = cache_shape[1];
    const T* keys = cache + (size_t)b * capacity * STRIDE + h * DH;
    const T* fresh = q + (size_t)b * QSTRIDE + D + h * DH;  // this step's key (its value D further on)
    if (tid < 2 * DH) {
        const int part = (tid / DH) * D + tid % DH;
        const_cast<T*>(keys)[(size_t)(length - 1) * STRIDE + part] = fresh[part];
    }
    auto key_row = [&](int t) { return t < length - 1 ? keys + (size_t)t * STRIDE : fresh; };
    auto value_row = [&](int t) { return t < length - 1 ? keys + D + (size_t)t * STRIDE : fresh + D; };
"""


@cache
def _cross_kernel(capture: bool, split: bool) -> Any:
    outputs = ["out"] + (["qk"] if capture else []) + (["ws"] if split else [])
    body = _BODY.replace("/*CAPTURE*/", _CAPTURE if capture else "")
    source = _CONSTANTS + _CROSS + body.replace("/*FINISH*/", _SPLIT_FINISH if split else _FINISH)
    return mx.fast.cuda_kernel(
        name="onepass_cross" + ("_s" if split else ""),
        input_names=["q", "k", "v"] + (["counters"] if split else []),
        output_names=outputs,
        source=source,
    )


@cache
def _self_kernel() -> Any:
    source = _CONSTANTS + _SELF + _BODY.replace("/*CAPTURE*/", "").replace("/*FINISH*/", _FINISH)
    return mx.fast.cuda_kernel(
        name="onepass_self", input_names=["q", "cache", "positions"], output_names=["out"], source=source
    )


# ``cross_split_count`` splits the window's frames of each (sequence, head) over several blocks while the unsplit
# blocks are fewer than about two a streaming multiprocessor (132 on an H100 and an H200): at batch 1, large-v3's 20
# heads are 20 blocks of 1500 frames each, too few loads in flight to read K and V at the GPU's bandwidth
CROSS_TARGET_BLOCKS = 256
CROSS_MAX_SPLITS = 12
CROSS_MIN_FRAMES = 64  # a part's frames: below this the ticket and the combining cost more than the part's reads
# the (sequence, head) pairs whose frames may be split: the counters ``cross_attention`` takes have this many
CROSS_SPLIT_PAIRS = CROSS_TARGET_BLOCKS // 2


def cross_split_count(batch: int, n_head: int, frames: int) -> int:
    """How many parts ``cross_attention`` splits each (sequence, head)'s frames into: 1 unless its blocks are fewer
    than half of ``CROSS_TARGET_BLOCKS``, else as many as keep about that many blocks (at most
    ``CROSS_MAX_SPLITS``, each part at least ``CROSS_MIN_FRAMES`` frames)."""
    pairs = batch * n_head
    splits = min(CROSS_MAX_SPLITS, CROSS_TARGET_BLOCKS // max(pairs, 1), frames // CROSS_MIN_FRAMES)
    return splits if splits > 1 and pairs <= CROSS_SPLIT_PAIRS else 1


def cross_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    n_head: int,
    heads: tuple[int, ...] = (),
    counters: mx.array | None = None,
) -> tuple[mx.array, mx.array | None]:
    """One query a sequence against its window's keys and values.

    ``q``: batch × 1 × state (the query linear's output); ``k``, ``v``: batch × frames × state (the key and value
    linears' outputs). Returns the attention output (batch × 1 × state, heads merged) and, for ``heads`` (in
    ascending order), their scaled scores before the softmax (batch × len(heads) × frames), else None.

    With ``counters`` (``CROSS_SPLIT_PAIRS`` uint32, created zero and kept), few sequences have their frames split
    over ``cross_split_count`` blocks each, in the same one launch: the parts of a (sequence, head) meet through its
    counter and the last combines them (``_SPLIT_FINISH``). As for ``linear``'s counters, two launches that share
    them must be ordered by their data (a decoder's layers are).
    """
    if list(heads) != sorted(set(heads)):
        raise ValueError(f"captured heads must be distinct and ascending, got {heads}")
    batch, frames, state = k.shape
    mask = 0
    for head in heads:
        mask |= 1 << head
    splits = 1 if counters is None else cross_split_count(batch, n_head, frames)
    inputs = [q, k, v]
    output_shapes: list[tuple[int, ...]] = [(batch, 1, state)]
    if heads:
        output_shapes.append((batch, len(heads), frames))
    output_dtypes = [q.dtype] * len(output_shapes)
    if splits > 1:
        assert counters is not None
        if counters.shape != (CROSS_SPLIT_PAIRS,) or counters.dtype != mx.uint32:
            raise ValueError(f"counters must be {CROSS_SPLIT_PAIRS} uint32, got {counters.shape} {counters.dtype}")
        inputs.append(counters)
        output_shapes.append((batch * n_head, splits, state // n_head + 2))
        output_dtypes.append(mx.float32)
    rows = -(-frames // splits)  # a part's frames (the last may have fewer)
    outputs = _cross_kernel(bool(heads), splits > 1)(
        inputs=inputs,
        template=[
            ("T", q.dtype),
            ("H", n_head),
            ("DH", state // n_head),
            ("ROWS", rows),
            ("FRAMES", frames),
            ("S", splits),
            ("THREADS", THREADS),
            ("CAPTURED", mask),
        ],
        grid=(batch * n_head * THREADS, splits, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=output_shapes,
        output_dtypes=output_dtypes,
    )
    return outputs[0], (outputs[1] if heads else None)


def self_attention(
    qkv: mx.array, cache: mx.array, positions: mx.array, n_head: int, max_positions: int
) -> tuple[mx.array, mx.array]:
    """One query a sequence against its self-attention cache's first ``positions[row]`` positions.

    ``qkv``: batch × 1 × 3·state, the query, key and value linear's output (read in place); ``cache``: batch ×
    capacity × 2·state, each position's key then its value, a row-contiguous buffer that nothing but the caller
    holds: this step's key and value are written into it at position ``positions[row] - 1``, in place;
    ``positions``: int32, one a row (rows refilled at different times are at different positions); ``max_positions``: the model's text context (sizes the scores).
    Returns the output (batch × 1 × state, heads merged) and the cache (the same array, written).
    """
    batch, _, state = cache.shape
    state //= 2
    outputs = _self_kernel()(
        inputs=[qkv, cache, positions],
        template=[
            ("T", qkv.dtype),
            ("H", n_head),
            ("DH", state // n_head),
            ("ROWS", max_positions),
            ("THREADS", THREADS),
        ],
        grid=(batch * n_head * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(batch, 1, state)],
        output_dtypes=[qkv.dtype],
    )
    out: mx.array = outputs[0]
    return out, cache


# y = x · wᵀ (+ bias) (then GELU) (+ residual) for the few rows of a one-token step (M ≤ 64), on the tensor cores
# (WMMA 16×16×16, float32 accumulators). A block owns 16 output columns and, split K ways (S, grid z), a 1/S of K;
# its 8 warps split that part, each streaming its part of those 16 weight rows (a 16 × 16 fragment of the
# nn.Linear weight, read where it lies: column-major B) and multiplying it with up to four 16-row tiles of x (MAIN):
# whole tiles straight from x (a few hundred kB, cached), the last partial one staged through shared memory with zero
# rows below M; or, with a layer norm before the linear (up to 16 rows), x normalised into shared memory first. The
# warps' partial tiles are summed in shared memory; then (TAIL) the epilogue adds the bias, GELU and the residual,
# or, split, the block leaves its sums in the workspace and the last of the S to finish adds them.
_LINEAR_HEADER = "#include <mma.h>\n"

_LINEAR = """
    using namespace nvcuda;
    constexpr int WARPS = 8, KS = K / S, KW = KS / WARPS, STEPS = KW / 16;
    static_assert(K % (S * WARPS * 16) == 0 && N % 16 == 0,
                  "K must split into S parts of 8 warps of 16-wide steps, N into 16s");
    constexpr int XS = KS + 8;  // a row of normalised x in shared memory, padded so that rows start in other banks
    constexpr int STAGED = NORM ? 16 * XS * sizeof(T) : 0, PARTIAL = WARPS * 64 * 16 * sizeof(float);
    __shared__ __align__(32) unsigned char smem[STAGED > PARTIAL ? STAGED : PARTIAL];
    T* staged = reinterpret_cast<T*>(smem);           // during the loop: x's tiles staged
    float* partial = reinterpret_cast<float*>(smem);  // after it: each warp's 64 × 16 partial outputs
    const int M = x_shape[0] * x_shape[1];
    const int n0 = blockIdx.x * 16, m0 = blockIdx.y * 64, k0 = blockIdx.z * KS;
    const int rows = min(64, M - m0), tiles = (rows + 15) / 16;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4];
    #pragma unroll
    for (int t = 0; t < 4; ++t) wmma::fill_fragment(acc[t], 0.0f);
    const T* wk = w + (size_t)n0 * K + k0 + warp * KW;
    MAIN
    __syncthreads();  // the staging area becomes the partial sums
    #pragma unroll
    for (int t = 0; t < 4; ++t) {
        if (t < tiles) wmma::store_matrix_sync(partial + (warp * 64 + t * 16) * 16, acc[t], 16, wmma::mem_row_major);
    }
    __syncthreads();
    TAIL
"""

# x as it is: each warp stages only a ragged last tile (16 × 16 a step) in its own corner of shared memory
_LINEAR_PLAIN = """
    T* mine = staged + warp * 16 * 16;
    const T* xk = x + (size_t)m0 * K + k0 + warp * KW;
    const int full = rows / 16;         // whole 16-row tiles: their fragments load straight from x (cached)
    const bool ragged = rows % 16 != 0;  // the last tile's rows, staged with zero rows below them
    #pragma unroll 4
    for (int s = 0; s < STEPS; ++s) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
        wmma::load_matrix_sync(b, wk + s * 16, K);
        if (ragged) {  // 16 rows of 16 values: one 16-byte load a lane
            const int r = full * 16 + lane / 2;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r < rows) v = *reinterpret_cast<const uint4*>(xk + (size_t)r * K + s * 16 + (lane % 2) * 8);
            reinterpret_cast<uint4*>(mine)[lane] = v;
            __syncwarp();
        }
        #pragma unroll
        for (int t = 0; t < 4; ++t) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            if (t < full) {
                wmma::load_matrix_sync(a, xk + (size_t)t * 16 * K + s * 16, K);
                wmma::mma_sync(acc[t], a, b, acc[t]);
            } else if (t == full && ragged) {
                wmma::load_matrix_sync(a, mine, 16);
                wmma::mma_sync(acc[t], a, b, acc[t]);
            }
        }
        if (ragged) __syncwarp();
    }
"""

# layer norm first (rows ≤ 16, one tile): each warp takes two rows, their mean and variance over the whole of K in
# float32, and writes the block's part of K of them normalised (gamma, beta) into shared memory, zero rows below M
_LINEAR_NORM = """
    constexpr int VEC = 16 / sizeof(T);
    for (int r = warp * 2; r < warp * 2 + 2; ++r) {
        T* out = staged + r * XS;
        if (r >= rows) {
            for (int k = lane; k < KS; k += 32) out[k] = static_cast<T>(0.0f);
            continue;
        }
        const T* row = x + (size_t)(m0 + r) * K;
        float sum = 0.0f;
        for (int k = lane * VEC; k < K; k += 32 * VEC) {
            const uint4 raw = *reinterpret_cast<const uint4*>(row + k);
            const T* v = reinterpret_cast<const T*>(&raw);
            #pragma unroll
            for (int i = 0; i < VEC; ++i) sum += static_cast<float>(v[i]);
        }
        #pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
        const float mean = sum / K;
        float squares = 0.0f;  // a second pass (the row is in L1 now): no cancellation in E[x²] - mean²
        for (int k = lane * VEC; k < K; k += 32 * VEC) {
            const uint4 raw = *reinterpret_cast<const uint4*>(row + k);
            const T* v = reinterpret_cast<const T*>(&raw);
            #pragma unroll
            for (int i = 0; i < VEC; ++i) squares += (static_cast<float>(v[i]) - mean) * (static_cast<float>(v[i]) - mean);
        }
        #pragma unroll
        for (int o = 16; o > 0; o >>= 1) squares += __shfl_xor_sync(0xffffffff, squares, o);
        const float scale = rsqrtf(squares / K + /*EPSILON*/);
        for (int k = lane; k < KS; k += 32) {
            const float f = (static_cast<float>(row[k0 + k]) - mean) * scale;
            out[k] = static_cast<T>(f * static_cast<float>(gamma[k0 + k]) + static_cast<float>(beta[k0 + k]));
        }
    }
    __syncthreads();
    #pragma unroll 4
    for (int s = 0; s < STEPS; ++s) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(b, wk + s * 16, K);
        wmma::load_matrix_sync(a, staged + warp * KW + s * 16, XS);
        wmma::mma_sync(acc[0], a, b, acc[0]);
    }
"""

# unsplit: the block's sums are the outputs
_LINEAR_TAIL = """
    for (int i = threadIdx.x; i < rows * 16; i += blockDim.x) {
        float v = 0.0f;
        #pragma unroll
        for (int j = 0; j < WARPS; ++j) v += partial[j * 64 * 16 + i];
        const int r = m0 + i / 16, c = n0 + i % 16;
        EPILOGUE
        y[(size_t)r * N + c] = static_cast<T>(v);
    }
"""

# split (one block of rows: m0 = 0, M = rows): each block stores its sums in its slice of the workspace, then takes
# a ticket from its columns' counter; the block with the last ticket adds the S slices in split order (the result
# does not depend on which block came last), applies the epilogue and sets the counter back to zero for the next
# launch. The counters are an input the kernel writes, as the self-attention kernel writes its cache (see
# ``_SELF``). The fences make each block's stores visible before its ticket, and the last block's loads come
# after it (from L2: __ldcg).
_LINEAR_SPLIT_TAIL = """
    static_assert(S > 1, "the split tail is for S > 1");
    __shared__ bool last;
    for (int i = threadIdx.x; i < rows * 16; i += blockDim.x) {
        float v = 0.0f;
        #pragma unroll
        for (int j = 0; j < WARPS; ++j) v += partial[j * 64 * 16 + i];
        ws[((size_t)blockIdx.z * M + m0 + i / 16) * N + n0 + i % 16] = v;
    }
    __threadfence();
    __syncthreads();
    unsigned int* counter = reinterpret_cast<unsigned int*>(const_cast<uint32_t*>(counters)) + blockIdx.x;
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == (unsigned int)(S - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = threadIdx.x; i < rows * 16; i += blockDim.x) {
        const int r = m0 + i / 16, c = n0 + i % 16;
        float v = 0.0f;
        #pragma unroll
        for (int z = 0; z < S; ++z) v += __ldcg(ws + ((size_t)z * M + r) * N + c);
        EPILOGUE
        y[(size_t)r * N + c] = static_cast<T>(v);
    }
    if (threadIdx.x == 0) *counter = 0u;
"""


@cache
def _linear_kernel(bias: bool, gelu: bool, residual: bool, eps: float | None, split: bool) -> Any:
    """The kernel for one combination: ``eps`` is the layer norm's before the linear (None: no layer norm)."""
    epilogue = ""
    if bias:
        epilogue += "v += static_cast<float>(bias[c]);\n"
    if gelu:
        epilogue += "v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));\n"
    if residual:
        epilogue += "v += static_cast<float>(residual[(size_t)r * N + c]);\n"
    inputs = ["x", "w"] + (["gamma", "beta"] if eps is not None else [])
    inputs += (["bias"] if bias else []) + (["residual"] if residual else []) + (["counters"] if split else [])
    main = _LINEAR_PLAIN if eps is None else _LINEAR_NORM.replace("/*EPSILON*/", f"{eps!r}f")
    tail = (_LINEAR_SPLIT_TAIL if split else _LINEAR_TAIL).replace("EPILOGUE", epilogue)
    norm = "n" if eps is not None else ""
    return mx.fast.cuda_kernel(
        name=f"onepass_linear_{int(bias)}{int(gelu)}{int(residual)}{norm}" + ("_s" if split else ""),
        input_names=inputs,
        output_names=["y", "ws"] if split else ["y"],
        source=f"constexpr bool NORM = {str(eps is not None).lower()};\n"
        + _LINEAR.replace("MAIN", main).replace("TAIL", tail),
        header=_LINEAR_HEADER,
    )


LINEAR_MAX_ROWS = 64  # rows a block holds; more rows take more blocks (grid y), and no split of K


# up to this many rows ``linear`` beats MLX's matmul; above, cuBLAS's GPU time wins over the host time saved
# (64 rows by 1280 × 51200: this kernel reads the weights at ~0.6 TB/s, cuBLAS at ~1.8; docs/performance.md #62)
LINEAR_KERNEL_MAX_ROWS = 16

NORM_MAX_ROWS = 16  # a layer norm before the linear: x normalised into shared memory, one 16-row tile

# ``split_count`` splits K of a weight whose 16-column tiles are fewer than this (about one block a streaming
# multiprocessor: 132 on an H100, 132 on an H200), until about ``TARGET_BLOCKS`` blocks are launched
SPLIT_BELOW_TILES = 128
TARGET_BLOCKS = 512


def linear_fits(x: mx.array, weight: mx.array) -> bool:
    """Whether ``linear`` should take these operands: few rows, half-precision, output columns in 16s, K in 8
    warps of 16."""
    out_features, in_features = weight.shape
    return (
        x.shape[0] * x.shape[1] <= LINEAR_KERNEL_MAX_ROWS
        and x.dtype in (mx.float16, mx.bfloat16)
        and weight.dtype == x.dtype
        and out_features % 16 == 0
        and in_features % 128 == 0
        and x.shape[-1] == in_features
    )


def split_count(out_features: int, in_features: int) -> int:
    """How many ways ``linear`` splits K of a weight: 1 unless its 16-column tiles are fewer than
    ``SPLIT_BELOW_TILES``, else the most that keeps the blocks within ``TARGET_BLOCKS``, each split a whole number of
    the 8 warps' 16-wide steps.

    Unsplit, 1280 output columns are 80 blocks: too few loads in flight to read the weights at more than ~0.5 TB/s
    (H200). Split 5 ways they are 400 blocks, each adding its partial sums to the others' (``_LINEAR_SPLIT_TAIL``;
    ``docs/performance.md`` #74: the MLP's second linear 0.81 -> 0.50 ms a step at batch 1, the out-projections
    0.77 -> 0.52; the query-key-value linear's 240 tiles split 2 ways were slower, 0.29 -> 0.38).
    """
    tiles, steps = out_features // 16, in_features // 128
    if out_features % 16 or in_features % 128 or tiles >= SPLIT_BELOW_TILES:
        return 1
    return max((d for d in range(1, steps + 1) if steps % d == 0 and tiles * d <= TARGET_BLOCKS), default=1)


def linear(
    x: mx.array,
    weight: mx.array,
    bias: mx.array | None = None,
    gelu: bool = False,
    residual: mx.array | None = None,
    norm: tuple[mx.array, mx.array, float] | None = None,
    counters: mx.array | None = None,
) -> mx.array:
    """``residual + gelu?(norm?(x) · weightᵀ + bias)`` in one kernel; ``weight``: out × in, as ``nn.Linear`` keeps it.

    For the few rows of a one-token step: MLX's matmul costs ~20-25 µs of host time a call on CUDA (cuBLAS captured
    into a graph), this kernel ~18 (``docs/performance.md`` #61). ``x``: batch × length × in (see
    ``linear_fits``); the result has ``x``'s leading shape with ``out`` features. ``norm``: a layer norm's weight,
    bias and epsilon, applied to x first (up to ``NORM_MAX_ROWS`` rows): one graph node fewer.

    With ``counters`` (uint32, one per 16 output columns, created zero and kept as long as the weight), a weight
    that ``split_count`` splits has K split in the same one launch: the blocks of each 16 columns meet through their
    counter, the last adds up the others' sums (a second output, discarded) and sets it back to zero for the next
    launch. Two launches that share counters must not run at once: MLX orders its nodes by their data only, so the
    second must depend on the first's output (as a decoder's next step does) or be evaluated after it.
    """
    out_features, in_features = weight.shape
    rows = x.shape[0] * x.shape[1]
    splits = split_count(out_features, in_features) if counters is not None and rows <= LINEAR_MAX_ROWS else 1
    inputs = [x, weight]
    if norm is not None:
        if rows > NORM_MAX_ROWS:
            raise ValueError(f"a layer norm before the linear takes at most {NORM_MAX_ROWS} rows, got {rows}")
        if 16 * (in_features // splits + 8) * x.itemsize > 48 * 1024:
            raise ValueError(f"a layer norm before the linear stages x in shared memory: K = {in_features} is too wide")
        inputs += [norm[0], norm[1]]
    inputs += ([bias] if bias is not None else []) + ([residual] if residual is not None else [])
    output_shapes: list[tuple[int, ...]] = [(x.shape[0], x.shape[1], out_features)]
    output_dtypes = [x.dtype]
    if splits > 1:
        assert counters is not None
        if counters.shape != (out_features // 16,) or counters.dtype != mx.uint32:
            raise ValueError(f"counters must be {out_features // 16} uint32, got {counters.shape} {counters.dtype}")
        inputs.append(counters)
        output_shapes.append((splits, rows, out_features))
        output_dtypes.append(mx.float32)
    kernel = _linear_kernel(bias is not None, gelu, residual is not None, None if norm is None else norm[2], splits > 1)
    outputs = kernel(
        inputs=inputs,
        template=[("T", x.dtype), ("N", out_features), ("K", in_features), ("S", splits)],
        grid=(out_features // 16 * 256, (rows + LINEAR_MAX_ROWS - 1) // LINEAR_MAX_ROWS, splits),
        threadgroup=(256, 1, 1),
        output_shapes=output_shapes,
        output_dtypes=output_dtypes,
    )
    y: mx.array = outputs[0]
    return y
