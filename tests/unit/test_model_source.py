"""CachedModelSource and the CTranslate2 reader on tiny synthetic models (numpy only, no MLX import)."""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attrs import evolve
from numpy.typing import NDArray

from onepass_whisper.adapters.models import (
    CachedModelSource,
    ModelDims,
    ct2,
    default_cache_dir,
    read_alignment_heads,
    source,
)
from onepass_whisper.adapters.models.hub import is_hub_id
from onepass_whisper.domain.errors import ModelLoadError
from onepass_whisper.domain.ports import ModelSource

DIMS = ModelDims(
    n_mels=8,
    n_audio_ctx=6,
    n_audio_state=8,
    n_audio_head=2,
    n_audio_layer=2,
    n_vocab=20,
    n_text_ctx=5,
    n_text_state=8,
    n_text_head=2,
    n_text_layer=2,
)
HEADS = [[1, 0], [1, 1]]
F32, I8, I16, F16, BF16 = 0, 1, 2, 4, 5
Arrays = dict[str, NDArray[np.float32]]


# ------------------------------------------------------------------ a CTranslate2 writer for synthetic models


def ct2_variables(dims: ModelDims, seed: int = 0) -> Arrays:
    """Random float32 weights under CTranslate2's Whisper names and shapes (fused q|k|v and k|v)."""
    rng = np.random.default_rng(seed)
    out: Arrays = {}

    def put(name: str, *shape: int) -> None:
        out[name] = rng.standard_normal(shape).astype(np.float32)

    def layer(prefix: str, n: int, cross: bool) -> None:
        put(f"{prefix}/self_attention/linear_0/weight", 3 * n, n)
        put(f"{prefix}/self_attention/linear_0/bias", 3 * n)
        put(f"{prefix}/self_attention/linear_1/weight", n, n)
        put(f"{prefix}/self_attention/linear_1/bias", n)
        norms = ["self_attention", "ffn"]
        if cross:
            put(f"{prefix}/attention/linear_0/weight", n, n)
            put(f"{prefix}/attention/linear_0/bias", n)
            put(f"{prefix}/attention/linear_1/weight", 2 * n, n)
            put(f"{prefix}/attention/linear_1/bias", 2 * n)
            put(f"{prefix}/attention/linear_2/weight", n, n)
            put(f"{prefix}/attention/linear_2/bias", n)
            norms.append("attention")
        put(f"{prefix}/ffn/linear_0/weight", 4 * n, n)
        put(f"{prefix}/ffn/linear_0/bias", 4 * n)
        put(f"{prefix}/ffn/linear_1/weight", n, 4 * n)
        put(f"{prefix}/ffn/linear_1/bias", n)
        for norm in norms:
            put(f"{prefix}/{norm}/layer_norm/gamma", n)
            put(f"{prefix}/{norm}/layer_norm/beta", n)

    a, t = dims.n_audio_state, dims.n_text_state
    put("encoder/conv1/weight", a, dims.n_mels, 3)
    put("encoder/conv1/bias", a)
    put("encoder/conv2/weight", a, a, 3)
    put("encoder/conv2/bias", a)
    for i in range(dims.n_audio_layer):
        layer(f"encoder/layer_{i}", a, cross=False)
    put("encoder/layer_norm/gamma", a)
    put("encoder/layer_norm/beta", a)
    out["encoder/position_encodings/encodings"] = sinusoids(dims.n_audio_ctx, a)
    put("decoder/embeddings/weight", dims.n_vocab, t)
    put("decoder/position_encodings/encodings", dims.n_text_ctx, t)
    for i in range(dims.n_text_layer):
        layer(f"decoder/layer_{i}", t, cross=True)
    put("decoder/layer_norm/gamma", t)
    put("decoder/layer_norm/beta", t)
    return out


def sinusoids(length: int, channels: int) -> NDArray[np.float32]:
    """Whisper's encoder positions (openai-whisper's ``sinusoids``)."""
    inverse = np.exp(-np.log(10_000) / (channels // 2 - 1) * np.arange(channels // 2))
    angles = np.arange(length)[:, None] * inverse[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _record(name: str, array: NDArray[np.generic], code: int) -> bytes:
    head = _string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
    return head + struct.pack("<BI", code, array.nbytes) + np.ascontiguousarray(array).tobytes()


def model_bin(variables: Mapping[str, NDArray[np.float32]], storage: str = "f16") -> bytes:
    """Serialise like CTranslate2's ``ModelSpec._serialize`` (version 6, sorted names, tied projection alias)."""
    records: dict[str, tuple[NDArray[np.generic], int]] = {
        "encoder/num_heads": (np.array(DIMS.n_audio_head, "<i2"), I16),
        "decoder/num_heads": (np.array(DIMS.n_text_head, "<i2"), I16),
        "decoder/activation": (np.array(3, "<i1"), I8),
    }
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    for name, value in variables.items():
        if storage == "int8" and name.endswith("/weight") and value.ndim == 2:
            scale = (127.0 / np.abs(value).max(axis=1)).astype("<f4")
            records[name] = (np.round(value * scale[:, None]).astype("<i1"), I8)
            records[name + "_scale"] = (scale, F32)
        elif storage == "bf16":
            records[name] = ((value.astype("<f4").view("<u4") >> 16).astype("<u2"), BF16)
        else:
            records[name] = (value.astype("<f2"), F16) if storage == "f16" else (value.astype("<f4"), F32)
    if storage == "int8":
        aliases["decoder/projection/weight_scale"] = "decoder/embeddings/weight_scale"
    out = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, len(records))
    out += b"".join(_record(name, *records[name]) for name in sorted(records))
    out += struct.pack("<I", len(aliases)) + b"".join(_string(k) + _string(v) for k, v in aliases.items())
    return out


def ct2_folder(folder: Path, storage: str = "f16", seed: int = 0, heads: object = HEADS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(model_bin(ct2_variables(DIMS, seed), storage))
    (folder / "config.json").write_text(json.dumps({"alignment_heads": heads, "suppress_ids": [1]}))
    return folder


def safetensors(path: Path) -> dict[str, NDArray[np.generic]]:
    """A minimal safetensors reader, to check what the converter wrote."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    body, dtypes = data[8 + length :], {"F16": "<f2", "F32": "<f4", "I64": "<i8"}
    return {
        name: np.frombuffer(body[info["data_offsets"][0] : info["data_offsets"][1]], dtypes[info["dtype"]]).reshape(
            info["shape"]
        )
        for name, info in header.items()
    }


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ------------------------------------------------------------------ name resolution


def test_unknown_name_lists_what_is_accepted(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        CachedModelSource(cache).resolve("tiny")
    message = str(info.value)
    assert "'tiny'" in message
    for accepted in (
        "tiny.en",
        "base",
        "app models --install base",
        "weights.safetensors",
        "model.bin",
        "mlx-community/whisper-large-v3-turbo",
    ):
        assert accepted in message
    assert entries(cache) == []


BAD_HUB_IDS = ["../x", "a/b/c", "/abs/x", "a/../b", "a..b/c", "https://hf.co/a", "a/b.", "-a/b", "a/"]


@pytest.mark.parametrize("name", BAD_HUB_IDS)
def test_hub_ids_are_validated_strictly(
    name: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id(name)
    with pytest.raises(ModelLoadError, match="not a known model"):
        CachedModelSource(cache).resolve(name)


@pytest.mark.parametrize("name", ["mlx-community/whisper-large-v3-turbo", "Systran/faster-whisper-tiny.en", "a/b"])
def test_hub_ids_accepted(name: str) -> None:
    assert is_hub_id(name)


def test_offline_hub_raises_model_load_error(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "onepass-whisper-tests/no-such-model-3f9c"
    with pytest.raises(ModelLoadError, match="could not be downloaded") as info:
        CachedModelSource(cache).resolve(name)
    assert info.value.name == name
    assert entries(cache) == []


def test_missing_base_packages_name_the_install_command(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = evolve(
        source.BUILTINS["base"],
        parts=(
            ("onepass_not_installed_part1", "data/model.bin.part1"),
            ("onepass_not_installed_part2", "data/model.bin.part2"),
        ),
    )
    monkeypatch.setitem(source.BUILTINS, "base", absent)
    with pytest.raises(ModelLoadError, match=r"run: app models --install base$"):
        CachedModelSource(cache).resolve("base")
    assert [i.installed for i in CachedModelSource(cache).known() if i.name == "base"] == [False]


def test_mlx_folder_is_returned_as_is(cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mlx"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(DIMS.to_config()))
    params: dict[str, Any] = {n: np.zeros(shape, np.float16) for n, shape in ct2.expected_shapes(DIMS).items()}
    np.savez(folder / "weights.npz", **params)
    assert CachedModelSource(cache).resolve(str(folder)) == folder.resolve()
    assert entries(cache) == []


@pytest.mark.parametrize("weights", ["empty npz", "npz lacking a parameter", "not a zip", "truncated safetensors"])
def test_an_incomplete_mlx_folder_is_refused(weights: str, cache: Path, tmp_path: Path) -> None:
    """mlx_whisper.load_model would keep random values for the parameters a file lacks: refused before that."""
    folder = tmp_path / "mlx"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**DIMS.to_config(), "model_type": "whisper"}))
    params: dict[str, Any] = {n: np.zeros(shape, np.float16) for n, shape in ct2.expected_shapes(DIMS).items()}
    if weights == "empty npz":
        np.savez(folder / "weights.npz")
    elif weights == "npz lacking a parameter":
        del params["decoder.ln.bias"]
        np.savez(folder / "weights.npz", **params)
    elif weights == "not a zip":
        (folder / "weights.npz").write_bytes(b"\x80\x04K\x01.")  # a pickle of 1
    else:
        ct2.write_safetensors(folder / "weights.safetensors", params)
        data = (folder / "weights.safetensors").read_bytes()
        (folder / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as info:
        CachedModelSource(cache).resolve(str(folder))
    message = str(info.value)
    assert message.startswith(f"cannot load model '{folder}': ") and "\n" not in message
    if weights == "npz lacking a parameter":
        assert message.endswith("weights.npz lacks 1 of the model's parameters (decoder.ln.bias)")
    assert entries(cache) == []


def test_folder_without_a_model_is_refused(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither"):
        CachedModelSource(cache).resolve(str(tmp_path))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        CachedModelSource(cache).resolve(str(tmp_path / "file.bin"))


# ------------------------------------------------------------------ cache location and reuse


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path.home()
    assert default_cache_dir({"ONEPASS_CACHE_DIR": "/o", "XDG_CACHE_HOME": "/x"}) == Path("/o")
    assert default_cache_dir({"ONEPASS_CACHE_DIR": "~/o"}) == home / "o"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/onepass-whisper")
    assert default_cache_dir({"ONEPASS_CACHE_DIR": "", "XDG_CACHE_HOME": ""}) == home / ".cache/onepass-whisper"
    assert default_cache_dir({}) == home / ".cache/onepass-whisper"
    monkeypatch.setenv("ONEPASS_CACHE_DIR", str(tmp_path / "env"))
    assert CachedModelSource().cache_dir == tmp_path / "env"
    assert CachedModelSource(tmp_path / "arg").cache_dir == tmp_path / "arg"


def test_conversion_is_reused(cache: Path, tmp_path: Path) -> None:
    folder = ct2_folder(tmp_path / "ct2")
    models = CachedModelSource(cache)
    first = models.resolve(str(folder))
    stamp = (first / "weights.safetensors").stat()
    assert models.resolve(str(folder)) == first
    again = (first / "weights.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)
    assert entries(cache) == [first.name]


def test_changed_source_gets_a_new_entry(cache: Path, tmp_path: Path) -> None:
    folder = ct2_folder(tmp_path / "ct2")
    models = CachedModelSource(cache)
    first = models.resolve(str(folder))
    ct2_folder(folder, seed=1)
    os.utime(folder / "model.bin", ns=(1, 1))  # the size is unchanged: the mtime tells
    second = models.resolve(str(folder))
    assert second != first
    assert not np.array_equal(
        safetensors(first / "weights.safetensors")["decoder.ln.bias"],
        safetensors(second / "weights.safetensors")["decoder.ln.bias"],
    )


@pytest.mark.parametrize("damage", ["truncate weights", "drop weights", "drop config", "extra config key", "bad heads"])
def test_corrupt_entry_is_rebuilt(damage: str, cache: Path, tmp_path: Path) -> None:
    folder = ct2_folder(tmp_path / "ct2")
    models = CachedModelSource(cache)
    entry = models.resolve(str(folder))
    good = (entry / "weights.safetensors").read_bytes()
    if damage == "truncate weights":
        (entry / "weights.safetensors").write_bytes(good[: len(good) // 2])
    elif damage == "drop weights":
        (entry / "weights.safetensors").unlink()
    elif damage == "drop config":
        (entry / "config.json").unlink()
    elif damage == "extra config key":
        (entry / "config.json").write_text(json.dumps({**DIMS.to_config(), "model_type": "whisper"}))
    else:
        (entry / "alignment_heads.json").write_text("[[9, 9]]")
    assert models.resolve(str(folder)) == entry
    assert (entry / "weights.safetensors").read_bytes() == good
    assert ModelDims.from_config(json.loads((entry / "config.json").read_text())) == DIMS
    assert read_alignment_heads(entry) == [(1, 0), (1, 1)]
    assert entries(cache) == [entry.name]


def test_failed_write_leaves_no_entry(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(path: Path, tensors: Mapping[str, NDArray[np.floating]]) -> None:
        path.write_bytes(b"\0" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(source, "write_safetensors", half_then_fail)
    with pytest.raises(ModelLoadError, match="disk full"):
        CachedModelSource(cache).resolve(str(ct2_folder(tmp_path / "ct2")))
    assert entries(cache) == []


def test_stale_temp_folders_are_swept(cache: Path, tmp_path: Path) -> None:
    cache.mkdir()
    stale, fresh = cache / ".tmp-dead", cache / ".tmp-busy"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 2 * source.STALE_SECONDS,) * 2)
    entry = CachedModelSource(cache).resolve(str(ct2_folder(tmp_path / "ct2")))
    assert entries(cache) == sorted([fresh.name, entry.name])


def test_known_lists_builtins(cache: Path) -> None:
    infos = {i.name: i for i in CachedModelSource(cache).known()}
    assert set(infos) == {"tiny.en", "base"}
    assert infos["tiny.en"].installed and infos["tiny.en"].cached is None
    assert infos["base"].install_hint == "app models --install base"


# ------------------------------------------------------------------ the converter


@pytest.mark.parametrize("storage", ["f16", "f32", "bf16", "int8"])
def test_conversion_maps_names_and_dtypes(storage: str, cache: Path, tmp_path: Path) -> None:
    src = ct2_variables(DIMS)
    entry = CachedModelSource(cache).resolve(str(ct2_folder(tmp_path / "ct2", storage)))
    out = safetensors(entry / "weights.safetensors")
    assert out.pop("alignment_heads").tolist() == HEADS  # as mlx-examples' converter stores them
    assert {k: v.shape for k, v in out.items()} == ct2.expected_shapes(DIMS)
    assert json.loads((entry / "config.json").read_text()) == DIMS.to_config()
    assert read_alignment_heads(entry) == [(1, 0), (1, 1)]
    tolerance = {"f16": 2e-3, "f32": 0.0, "bf16": 1e-2, "int8": 3e-2}[storage]
    d = DIMS.n_text_state

    def close(mlx_name: str, expected: NDArray[np.float32]) -> None:
        np.testing.assert_allclose(out[mlx_name].astype(np.float32), expected, rtol=tolerance, atol=tolerance)

    qkv = src["decoder/layer_1/self_attention/linear_0/weight"]
    close("decoder.blocks.1.attn.query.weight", qkv[:d])
    close("decoder.blocks.1.attn.key.weight", qkv[d : 2 * d])
    close("decoder.blocks.1.attn.value.weight", qkv[2 * d :])
    close("decoder.blocks.1.attn.value.bias", src["decoder/layer_1/self_attention/linear_0/bias"][2 * d :])
    close("decoder.blocks.0.cross_attn.value.weight", src["decoder/layer_0/attention/linear_1/weight"][d:])
    close("decoder.blocks.0.cross_attn.out.bias", src["decoder/layer_0/attention/linear_2/bias"])
    close("encoder.conv2.weight", src["encoder/conv2/weight"].transpose(0, 2, 1))
    close("encoder.ln_post.weight", src["encoder/layer_norm/gamma"])
    close("decoder.token_embedding.weight", src["decoder/embeddings/weight"])
    assert "decoder.blocks.0.attn.key.bias" not in out
    assert out["encoder.conv1.weight"].dtype == (np.float16 if storage == "f16" else np.float32)


def test_split_parts_read_like_one_file(tmp_path: Path) -> None:
    blob = model_bin(ct2_variables(DIMS))
    whole = tmp_path / "model.bin"
    whole.write_bytes(blob)
    cuts = [0, 7, 1001, 1002, len(blob) // 2, len(blob)]  # inside the header, a name, a tensor; one part empty
    parts = [tmp_path / f"model.bin.part{i}" for i in range(len(cuts) - 1)]
    for part, start, stop in zip(parts, cuts, cuts[1:]):
        part.write_bytes(blob[start:stop])
    (tmp_path / "empty").write_bytes(b"")
    one, split = ct2.read_ct2([whole]), ct2.read_ct2([*parts[:2], tmp_path / "empty", *parts[2:]])
    assert one.keys() == split.keys()
    assert all(np.array_equal(one[k], split[k]) for k in one)


def _bad_models() -> dict[str, bytes]:
    good = model_bin(ct2_variables(DIMS))
    ok_header = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<I", 3)
    x = ok_header + struct.pack("<I", 1) + _string("x")  # one variable named x
    return {
        "empty": b"",
        "version 5": struct.pack("<I", 5) + good[4:],
        "other spec": struct.pack("<I", 6) + _string("TransformerSpec") + good[18:],
        "byte count": x + struct.pack("<BIBI", 1, 4, F32, 12) + b"\0" * 12,
        "dtype code": x + struct.pack("<BIBI", 1, 4, 9, 16) + b"\0" * 16,
        "trailing bytes": good + b"\0",
        "missing variable": ok_header + struct.pack("<II", 0, 0),
        **{f"truncated at {n}": good[:n] for n in (3, 9, 30, 60, 500, len(good) // 2, len(good) - 5)},
    }


@pytest.mark.parametrize("case", sorted(_bad_models()))
def test_garbage_gives_model_load_error_and_no_entry(case: str, cache: Path, tmp_path: Path) -> None:
    folder = ct2_folder(tmp_path / "ct2")
    (folder / "model.bin").write_bytes(_bad_models()[case])
    with pytest.raises(ModelLoadError, match="not a usable CTranslate2 Whisper model") as info:
        CachedModelSource(cache).resolve(str(folder))
    assert "\n" not in str(info.value)
    assert [p for p in entries(cache) if not p.startswith(".tmp-")] == entries(cache) == []


def test_learned_encoder_positions_are_refused(cache: Path, tmp_path: Path) -> None:
    """mlx-whisper recomputes the encoder's sinusoids: other stored positions would be silently ignored."""
    variables = ct2_variables(DIMS)
    variables["encoder/position_encodings/encodings"] += 0.5
    folder = ct2_folder(tmp_path / "ct2")
    (folder / "model.bin").write_bytes(model_bin(variables))
    with pytest.raises(ModelLoadError, match="sinusoids"):
        CachedModelSource(cache).resolve(str(folder))


def test_bad_alignment_heads_in_ct2_config_are_refused(cache: Path, tmp_path: Path) -> None:
    folder = ct2_folder(tmp_path / "ct2", heads=[[DIMS.n_text_layer, 0]])
    with pytest.raises(ModelLoadError, match="outside"):
        CachedModelSource(cache).resolve(str(folder))
    assert entries(cache) == []


def test_config_without_heads_writes_no_heads_file(cache: Path, tmp_path: Path) -> None:
    folder = ct2_folder(tmp_path / "ct2")
    (folder / "config.json").write_text("{}")
    entry = CachedModelSource(cache).resolve(str(folder))
    assert read_alignment_heads(entry) is None
    assert not (entry / "alignment_heads.json").exists()
    assert "alignment_heads" not in safetensors(entry / "weights.safetensors")


@pytest.mark.parametrize("weights", ["weights.safetensors", "weights.npz"])
def test_heads_are_read_from_mlx_weights_without_a_json_file(weights: str, tmp_path: Path) -> None:
    """mlx-community folders carry ``Whisper.alignment_heads`` among their weights."""
    (tmp_path / "config.json").write_text(json.dumps({**DIMS.to_config(), "model_type": "whisper"}))
    plain: dict[str, Any] = {"decoder.ln.bias": np.zeros(DIMS.n_text_state, np.float16)}
    stored = {**plain, "alignment_heads": np.array(HEADS, dtype=np.int64)}
    if weights == "weights.npz":
        np.savez(tmp_path / weights, **stored)
    else:
        ct2.write_safetensors(tmp_path / weights, stored)
    assert read_alignment_heads(tmp_path) == [(1, 0), (1, 1)]
    np.savez(tmp_path / "weights.npz", **plain)
    (tmp_path / "weights.safetensors").unlink(missing_ok=True)
    assert read_alignment_heads(tmp_path) is None


def test_malformed_heads_file_is_a_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "alignment_heads.json").write_text('[[1, "a"]]')
    with pytest.raises(ModelLoadError, match="alignment_heads.json"):
        read_alignment_heads(tmp_path)


def test_dims_from_config_refuses_extra_keys() -> None:
    with pytest.raises(ValueError, match="keys"):
        ModelDims.from_config({**DIMS.to_config(), "model_type": "whisper"})
    with pytest.raises(ValueError, match="positive"):
        ModelDims.from_config({**DIMS.to_config(), "n_mels": True})


def _conforms() -> None:  # mypy-only; never called
    _s: ModelSource = CachedModelSource()
