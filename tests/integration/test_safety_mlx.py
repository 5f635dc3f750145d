"""Model weights reach MLX only as safetensors or npz, read without pickle: a pickle payload is refused, unopened.

``load_decoder`` hands the folder to ``mlx_whisper.load_model``, which reads ``weights.safetensors`` or
``weights.npz`` with ``mx.load`` (MLX's own C++ readers). Unpickling a payload here would create a marker file.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onepass_whisper.adapters.mlx import load_decoder
from onepass_whisper.adapters.models import CachedModelSource
from onepass_whisper.adapters.models.ct2 import expected_shapes
from onepass_whisper.domain.errors import ModelLoadError
from tests.unit.test_model_source import DIMS
from tests.unit.test_safety import Payload, object_npz


def folder_with(tmp_path: Path, weights: str, data: bytes | None = None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(DIMS.to_config()))
    if data is not None:
        (folder / weights).write_bytes(data)
    return folder


def test_an_npz_with_an_object_array_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    folder = folder_with(tmp_path, "weights.npz")
    object_npz(folder / "weights.npz", marker, "decoder.ln.weight")

    with pytest.raises(ModelLoadError, match="Unsupported array protocol type-string"):
        load_decoder(folder, "evil")
    assert not marker.exists()


@pytest.mark.parametrize("weights", ["weights.npz", "weights.safetensors"])
def test_a_pickle_named_like_weights_is_refused(tmp_path: Path, weights: str) -> None:
    marker = tmp_path / "unpickled"
    folder = folder_with(tmp_path, weights, pickle.dumps({"decoder.ln.weight": Payload(marker)}))

    with pytest.raises(ModelLoadError) as info:
        load_decoder(folder, "evil")
    assert str(info.value).startswith(f"cannot load model 'evil': {folder}: ")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_a_complete_npz_loads(tmp_path: Path) -> None:
    """The refusals above are of pickles, not of npz: a complete npz of numbers (checked by ``CachedModelSource``)
    loads."""
    folder = folder_with(tmp_path, "weights.npz")
    params: dict[str, Any] = {n: np.full(shape, 0.01, np.float32) for n, shape in expected_shapes(DIMS).items()}
    np.savez(folder / "weights.npz", **params)
    assert CachedModelSource(tmp_path / "cache").resolve(str(folder)) == folder.resolve()
    assert load_decoder(folder, "zeros").name == "zeros"
