"""Real adapters: the embedded tiny.en, converted once per test session into a temporary cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from onepass_whisper.adapters.models import CachedModelSource
from onepass_whisper.domain.ports import Decoder


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_en_folder(model_cache: Path) -> Path:
    return CachedModelSource(model_cache).resolve("tiny.en")


@pytest.fixture(scope="session")
def tiny_en(tiny_en_folder: Path) -> Decoder:
    from onepass_whisper.adapters.mlx import load_decoder

    return load_decoder(tiny_en_folder, "tiny.en")


@pytest.fixture(scope="module")
def renamed_tiny_en(tiny_en_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.en's files under a folder name that is no built-in model's: what the code finds must come from the
    weights, never from the name."""
    folder = tmp_path_factory.mktemp("models") / "my-own-model"
    folder.mkdir()
    for file in tiny_en_folder.iterdir():
        (folder / file.name).symlink_to(file)
    return folder
