"""CTranslate2 ``model.bin`` (binary version 6) -> mlx-whisper weights, with numpy only.

The format (``../shared/docs/MODELS.md``): a header, ``num_variables`` records
``name, rank, shape, dtype, num_bytes, data`` sorted by name, then ``num_aliases`` pairs; all little endian,
strings are a uint16 length (counting a trailing NUL) and UTF-8 bytes. Tensors are zero-copy views of a
read-only memory map; a model split into parts (``model.bin.part1``, ``.part2``) is read in place, copying only
the one tensor that straddles a boundary.

Format problems raise ``Ct2FormatError`` (a ``ValueError``); ``adapters.models.source`` turns it into
``ModelLoadError`` naming the model.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from attrs import asdict, frozen
from numpy.typing import NDArray

BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
ENCODER_SINUSOIDS = "encoder/position_encodings/encodings"  # mlx-whisper computes these (max diff 2.4e-4)

Array = NDArray[Any]
Shapes = dict[str, tuple[int, ...]]

_FLOAT16, _BFLOAT16 = 4, 5
_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<f4"),
    1: np.dtype("<i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    _FLOAT16: np.dtype("<f2"),
    _BFLOAT16: np.dtype("<u2"),  # converted to float32 on read
}
_SAFETENSORS_DTYPES: dict[np.dtype[Any], str] = {
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
}
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {code: dtype for dtype, code in _SAFETENSORS_DTYPES.items()}
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


class Ct2FormatError(ValueError):
    """``model.bin`` is not a readable CTranslate2 Whisper model (truncated, garbage, unexpected layout)."""


@frozen
class ModelDims:
    """mlx-whisper's ``ModelDimensions``, field for field (``config.json`` holds exactly these keys)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    def to_config(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> ModelDims:
        """From a ``config.json`` dict with exactly the dimension keys; ``ValueError`` otherwise."""
        names = [a.name for a in cls.__attrs_attrs__]
        if sorted(config) != sorted(names):
            raise ValueError(f"config keys {sorted(config)} are not {sorted(names)}")
        values = {n: config[n] for n in names}
        ints = {n: x for n, x in values.items() if isinstance(x, int) and not isinstance(x, bool) and x > 0}
        if len(ints) != len(names):
            raise ValueError(f"config dimensions must be positive integers: {values}")
        return cls(**ints)


# ---------------------------------------------------------------- reading


class _Bytes:
    """Read-only bytes of one file or of several parts concatenated in order, memory-mapped."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._parts = [_map(p) for p in paths]
        self._starts = np.cumsum([0] + [len(p) for p in self._parts])
        self.size = int(self._starts[-1])

    def take(self, offset: int, count: int, what: str) -> NDArray[np.uint8]:
        """``count`` bytes at ``offset``; a view unless they straddle two parts."""
        if count < 0 or offset + count > self.size:
            raise Ct2FormatError(f"file ends at byte {self.size}, inside {what} (needs {offset + count})")
        first = int(np.searchsorted(self._starts, offset, side="right")) - 1
        pieces: list[NDArray[np.uint8]] = []
        index, start, left = first, offset, count
        while left > 0:
            local = start - int(self._starts[index])
            piece = self._parts[index][local : local + left]
            pieces.append(piece)
            start, left, index = start + len(piece), left - len(piece), index + 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.empty(0, np.uint8)


def _map(path: Path) -> NDArray[np.uint8]:
    if path.stat().st_size == 0:
        return np.empty(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


class _Cursor:
    def __init__(self, data: _Bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int, what: str) -> NDArray[np.uint8]:
        view = self.data.take(self.offset, count, what)
        self.offset += count
        return view

    def scalar(self, fmt: str, what: str) -> int:
        value: int = struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what).tobytes())[0]
        return value

    def string(self, what: str) -> str:
        length = self.scalar("H", what)
        raw = self.take(length, what).tobytes()
        if length == 0 or raw[-1:] != b"\0":
            raise Ct2FormatError(f"{what} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Ct2FormatError(f"{what} is not UTF-8") from exc


def read_ct2(paths: Sequence[Path]) -> dict[str, Array]:
    """Variables of a CT2 Whisper ``model.bin`` (parts concatenated in order), aliases resolved.

    Quantized weights are dequantized (``int / weight_scale``, as float32), bfloat16 becomes float32, other
    dtypes stay as stored (float16 views of the memory map). Rank-0 variables are config scalars.
    """
    cursor = _Cursor(_Bytes(paths))
    version = cursor.scalar("I", "the binary version")
    if version != BINARY_VERSION:
        raise Ct2FormatError(f"binary version {version}, expected {BINARY_VERSION} (not a CTranslate2 model.bin?)")
    spec = cursor.string("the spec name")
    if spec != SPEC_NAME:
        raise Ct2FormatError(f"spec {spec!r} is not {SPEC_NAME!r}")
    cursor.scalar("I", "the spec revision")
    raw: dict[str, Array] = {}
    for index in range(cursor.scalar("I", "the variable count")):
        name = cursor.string(f"variable #{index}'s name")
        raw[name] = _read_variable(cursor, name)
    for index in range(cursor.scalar("I", "the alias count")):
        alias = cursor.string(f"alias #{index}")
        target = cursor.string(f"alias {alias!r}'s target")
        if target not in raw:
            raise Ct2FormatError(f"alias {alias!r} points at missing variable {target!r}")
        raw[alias] = raw[target]  # the same array object: dequantized once below
    if cursor.offset != cursor.data.size:
        raise Ct2FormatError(f"{cursor.data.size - cursor.offset} unexpected bytes after the last alias")
    return _dequantize(raw)


def _read_variable(cursor: _Cursor, name: str) -> Array:
    rank = cursor.scalar("B", f"{name}'s rank")
    shape = tuple(cursor.scalar("I", f"{name}'s shape") for _ in range(rank))
    code = cursor.scalar("B", f"{name}'s dtype")
    if code not in _DTYPES:
        raise Ct2FormatError(f"{name} has unknown dtype code {code}")
    dtype = _DTYPES[code]
    num_bytes = cursor.scalar("I", f"{name}'s byte count")
    if num_bytes != math.prod(shape) * dtype.itemsize:
        raise Ct2FormatError(f"{name}: {num_bytes} bytes do not hold {shape} of {dtype}")
    array = cursor.take(num_bytes, f"{name}'s data").view(dtype).reshape(shape)
    if code == _BFLOAT16:  # bfloat16 is the top half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _dequantize(raw: Mapping[str, Array]) -> dict[str, Array]:
    """Replace each ``<x>/weight`` that has a ``<x>/weight_scale`` by ``weight / scale`` (float32)."""
    out = {name: value for name, value in raw.items() if not name.endswith("/weight_scale")}
    done: dict[tuple[int, int], Array] = {}  # aliases share arrays: dequantize each pair once
    for name, scale in raw.items():
        if not name.endswith("/weight_scale"):
            continue
        weight_name = name.removesuffix("_scale")
        weight = raw.get(weight_name)
        if weight is None or weight.dtype.kind != "i":
            raise Ct2FormatError(f"{name} scales no integer weight")
        key = (id(weight), id(scale))
        if key not in done:
            done[key] = _divide(name, weight, scale)
        out[weight_name] = done[key]
    return out


def _divide(name: str, weight: Array, scale: Array) -> Array:
    if scale.size == 1:
        divisor = scale.astype(np.float32).reshape(())
    elif scale.ndim == 1 and weight.ndim >= 1 and scale.shape[0] == weight.shape[0]:  # one scale per row
        divisor = scale.astype(np.float32).reshape((-1,) + (1,) * (weight.ndim - 1))
    else:
        raise Ct2FormatError(f"{name} of shape {scale.shape} does not fit a weight of shape {weight.shape}")
    result: Array = weight.astype(np.float32) / divisor
    return result


# ---------------------------------------------------------------- mapping to mlx-whisper


def to_mlx_whisper(variables: Mapping[str, Array]) -> tuple[ModelDims, dict[str, Array]]:
    """mlx-whisper dimensions and parameters (its names and layout) from CT2 Whisper variables."""
    used: set[str] = set()

    def get(name: str) -> Array:
        if name not in variables:
            raise Ct2FormatError(f"variable {name} is missing")
        used.add(name)
        return variables[name]

    def scalar(name: str) -> int:
        value = get(name)
        if value.ndim != 0 or value.dtype.kind not in "iu":
            raise Ct2FormatError(f"{name} is not an integer scalar")
        return int(value)

    def matrix(name: str, rank: int) -> Array:
        value = get(name)
        if value.ndim != rank or value.dtype.kind != "f":
            raise Ct2FormatError(f"{name} is {value.dtype} of shape {value.shape}, expected a rank-{rank} float")
        return value

    conv1 = matrix("encoder/conv1/weight", 3)
    embeddings = matrix("decoder/embeddings/weight", 2)
    _check_sinusoids(matrix(ENCODER_SINUSOIDS, 2))
    dims = ModelDims(
        n_mels=conv1.shape[1],
        n_audio_ctx=matrix(ENCODER_SINUSOIDS, 2).shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=scalar("encoder/num_heads"),
        n_audio_layer=_count_layers(variables, "encoder"),
        n_vocab=embeddings.shape[0],
        n_text_ctx=matrix("decoder/position_encodings/encodings", 2).shape[0],
        n_text_state=embeddings.shape[1],
        n_text_head=scalar("decoder/num_heads"),
        n_text_layer=_count_layers(variables, "decoder"),
    )
    out: dict[str, Array] = {}

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = matrix(f"{src}/weight", 2), matrix(f"{src}/bias", 1)

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = matrix(f"{src}/gamma", 1), matrix(f"{src}/beta", 1)

    def fused(src: str, dst: str, parts: Sequence[str]) -> None:
        """Split a fused projection: rows ``[i*d, (i+1)*d)`` are ``parts[i]``; the key has no bias."""
        weight, bias = matrix(f"{src}/weight", 2), matrix(f"{src}/bias", 1)
        if weight.shape[0] % len(parts) or bias.shape[0] != weight.shape[0]:
            raise Ct2FormatError(f"{src} of shape {weight.shape} does not split in {len(parts)}")
        d = weight.shape[0] // len(parts)
        for i, part in enumerate(parts):
            out[f"{dst}.{part}.weight"] = weight[i * d : (i + 1) * d]
            if part != "key":  # q·(k + b) shifts every logit of a query equally: softmax ignores it
                out[f"{dst}.{part}.bias"] = bias[i * d : (i + 1) * d]

    for i in (1, 2):  # CT2 [out, in, k] -> MLX [out, k, in]
        out[f"encoder.conv{i}.weight"] = matrix(f"encoder/conv{i}/weight", 3).transpose(0, 2, 1)  # a view
        out[f"encoder.conv{i}.bias"] = matrix(f"encoder/conv{i}/bias", 1)
    for side, layers in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(layers):
            src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            fused(f"{src}/self_attention/linear_0", f"{dst}.attn", ("query", "key", "value"))
            linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            if side == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
                fused(f"{src}/attention/linear_1", f"{dst}.cross_attn", ("key", "value"))
                linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
                norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
            linear(f"{src}/ffn/linear_0", f"{dst}.mlp1")
            linear(f"{src}/ffn/linear_1", f"{dst}.mlp2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
    norm("encoder/layer_norm", "encoder.ln_post")
    norm("decoder/layer_norm", "decoder.ln")
    out["decoder.token_embedding.weight"] = embeddings
    out["decoder.positional_embedding"] = matrix("decoder/position_encodings/encodings", 2)

    projection = variables.get("decoder/projection/weight")
    if projection is not None and projection is not embeddings and not np.array_equal(projection, embeddings):
        raise Ct2FormatError("decoder/projection/weight differs from the embeddings (mlx-whisper ties them)")
    used.add("decoder/projection/weight")
    leftover = sorted(n for n, v in variables.items() if v.ndim and n not in used)
    if leftover:
        raise Ct2FormatError(f"unexpected variables {leftover[:4]}{'...' if len(leftover) > 4 else ''}")
    check_shapes(dims, {name: tuple(value.shape) for name, value in out.items()})
    return dims, out


def _check_sinusoids(stored: Array) -> None:
    """mlx-whisper recomputes the encoder's positions, so the stored ones must be Whisper's sinusoids."""
    length, channels = stored.shape
    if channels % 2:
        raise Ct2FormatError(f"{ENCODER_SINUSOIDS} has an odd width {channels}")
    inverse = np.exp(-math.log(10_000) / (channels // 2 - 1) * np.arange(channels // 2))
    angles = np.arange(length)[:, None] * inverse[None, :]
    error = float(np.abs(np.concatenate([np.sin(angles), np.cos(angles)], axis=1) - stored).max(initial=0.0))
    if error > 1e-2:  # heuristic: float16 storage differs by ~2.4e-4; anything larger is not sinusoidal
        raise Ct2FormatError(f"{ENCODER_SINUSOIDS} are not Whisper's sinusoids (max difference {error:.3g})")


def _count_layers(variables: Mapping[str, Array], side: str) -> int:
    indices = {int(m.group(2)) for n in variables if (m := _LAYER.match(n)) and m.group(1) == side}
    if indices != set(range(len(indices))) or not indices:
        raise Ct2FormatError(f"{side} layers {sorted(indices)} are not 0..n-1")
    return len(indices)


def expected_shapes(dims: ModelDims) -> Shapes:
    """Parameter names and shapes of ``mlx_whisper.whisper.Whisper(dims)`` (mlx-whisper 0.4.3).

    A numpy mirror, so conversion needs no MLX import; the integration test checks it against the real tree.
    ``Whisper.alignment_heads`` (an array attribute, so in ``parameters()``) is data, not a weight: left out.
    """
    shapes: Shapes = {}

    def block(prefix: str, n: int, cross: bool) -> None:
        attentions = ("attn", "cross_attn") if cross else ("attn",)
        for attn in attentions:
            for proj in ("query", "key", "value", "out"):
                shapes[f"{prefix}.{attn}.{proj}.weight"] = (n, n)
                if proj != "key":
                    shapes[f"{prefix}.{attn}.{proj}.bias"] = (n,)
        for ln in (*(f"{a}_ln" for a in attentions), "mlp_ln"):
            shapes[f"{prefix}.{ln}.weight"] = shapes[f"{prefix}.{ln}.bias"] = (n,)
        shapes[f"{prefix}.mlp1.weight"], shapes[f"{prefix}.mlp1.bias"] = (4 * n, n), (4 * n,)
        shapes[f"{prefix}.mlp2.weight"], shapes[f"{prefix}.mlp2.bias"] = (n, 4 * n), (n,)

    a, t = dims.n_audio_state, dims.n_text_state
    shapes["encoder.conv1.weight"], shapes["encoder.conv1.bias"] = (a, 3, dims.n_mels), (a,)
    shapes["encoder.conv2.weight"], shapes["encoder.conv2.bias"] = (a, 3, a), (a,)
    for i in range(dims.n_audio_layer):
        block(f"encoder.blocks.{i}", a, cross=False)
    shapes["encoder.ln_post.weight"] = shapes["encoder.ln_post.bias"] = (a,)
    shapes["decoder.token_embedding.weight"] = (dims.n_vocab, t)
    shapes["decoder.positional_embedding"] = (dims.n_text_ctx, t)
    for i in range(dims.n_text_layer):
        block(f"decoder.blocks.{i}", t, cross=True)
    shapes["decoder.ln.weight"] = shapes["decoder.ln.bias"] = (t,)
    return shapes


def check_shapes(dims: ModelDims, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """``Ct2FormatError`` unless ``shapes`` is exactly mlx-whisper's tree for ``dims`` (and heads divide states)."""
    if dims.n_audio_state % dims.n_audio_head or dims.n_text_state % dims.n_text_head:
        raise Ct2FormatError(f"head counts do not divide the widths: {dims}")
    expected = expected_shapes(dims)
    missing, extra = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    wrong = sorted(n for n in expected.keys() & shapes.keys() if tuple(shapes[n]) != expected[n])
    if missing or extra or wrong:
        problems = (("missing", missing), ("extra", extra), ("misshapen", wrong))
        detail = "; ".join(f"{label} {names[:3]}" for label, names in problems if names)
        raise Ct2FormatError(f"parameters do not match mlx-whisper's Whisper{dims.to_config()}: {detail}")


# ---------------------------------------------------------------- writing


def write_safetensors(path: Path, tensors: Mapping[str, Array]) -> None:
    """Write ``tensors`` (float16/32, int32/64) as safetensors, one tensor at a time, and fsync."""
    arrays = {name: _little_endian(name, tensors[name]) for name in sorted(tensors)}
    header: dict[str, object] = {"__metadata__": {"format": "mlx"}}
    offset = 0
    for name, array in arrays.items():
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the spec lets the header be space-padded; 8 keeps data aligned
    with path.open("wb") as sink:
        sink.write(struct.pack("<Q", len(encoded)) + encoded)
        for array in arrays.values():
            _write_array(sink, array)
        sink.flush()
        os.fsync(sink.fileno())


def _little_endian(name: str, array: Array) -> Array:
    dtype = array.dtype.newbyteorder("<")
    if dtype not in _SAFETENSORS_DTYPES:
        raise Ct2FormatError(f"{name} has dtype {array.dtype}, which this writer does not store")
    return array.astype(dtype, copy=False)


def _write_array(sink: BinaryIO, array: Array) -> None:
    for chunk in _chunks(array):
        sink.write(np.ascontiguousarray(chunk).data)


def _chunks(array: Array, rows: int = 4096) -> Iterator[Array]:
    """Row blocks, so that copying a strided view never doubles a large tensor in memory."""
    if array.ndim == 0:
        yield array.reshape(1)
        return
    for start in range(0, max(array.shape[0], 1), rows):
        yield array[start : start + rows]


@frozen
class TensorInfo:
    """One tensor of a safetensors file: dtype code, shape and absolute byte range."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    stop: int


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file; ``ValueError`` unless the header is sane and the data ends at EOF."""
    size = path.stat().st_size
    with path.open("rb") as source:
        (length,) = struct.unpack("<Q", source.read(8).ljust(8, b"\xff"))
        if length > min(size, 100_000_000):
            raise ValueError(f"{path}: header length {length} is not plausible")
        header = json.loads(source.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    tensors, end = {}, 0
    for name, info in header.items():
        shape, offsets = (info.get("shape"), info.get("data_offsets")) if isinstance(info, dict) else (None, None)
        if not (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2):
            raise ValueError(f"{path}: bad header entry {name}")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (*shape, *offsets)):
            raise ValueError(f"{path}: bad shape or offsets for {name}")
        start, stop = 8 + length + offsets[0], 8 + length + offsets[1]
        tensors[name] = TensorInfo(str(info.get("dtype")), tuple(shape), start, stop)
        end = max(end, stop)
    if size != end:
        raise ValueError(f"{path}: {size} bytes, but its header describes {end}")
    return tensors


def read_safetensors_tensor(path: Path, info: TensorInfo) -> Array:
    """One (small) tensor's values; ``ValueError`` for a dtype this reader does not know."""
    if info.dtype not in _NUMPY_DTYPES:
        raise ValueError(f"{path}: unsupported dtype {info.dtype}")
    dtype = _NUMPY_DTYPES[info.dtype]
    if info.stop - info.start != math.prod(info.shape) * dtype.itemsize:
        raise ValueError(f"{path}: byte range does not hold {info.shape} of {info.dtype}")
    with path.open("rb") as source:
        source.seek(info.start)
        values: Array = np.frombuffer(source.read(info.stop - info.start), dtype).reshape(info.shape)
    return values
