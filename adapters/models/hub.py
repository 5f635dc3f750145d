"""Hugging Face Hub repositories: strict id validation and download of the files a Whisper folder needs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from onepass_whisper.domain.errors import ModelLoadError

# One "owner/name": each part starts and ends with a letter or digit, uses [A-Za-z0-9._-], no ".." or "--",
# at most 96 characters (the Hub's own rules); so "../x", "/abs", "a/b/c" and URLs are rejected.
_PART = r"(?![^/]*(?:\.\.|--))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"{_PART}/{_PART}")

# mlx-whisper layout, CTranslate2 layout, our alignment heads; never tokenizers or PyTorch weights.
FILES = ["config.json", "weights.safetensors", "weights.npz", "model.bin", "alignment_heads.json"]


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is a well-formed ``owner/name`` repository id."""
    return HUB_ID.fullmatch(name) is not None


def download(repo_id: str) -> Path:
    """The local snapshot folder of ``repo_id`` (the Hub's own cache); ``ModelLoadError`` when unreachable.

    ``HF_HUB_OFFLINE`` is read at call time (huggingface_hub reads it once, at import).
    """
    if not is_hub_id(repo_id):
        raise ModelLoadError(repo_id, "not a valid Hugging Face repository id (expected owner/name)")
    from huggingface_hub import errors, snapshot_download

    # The HTTP client's own base error (requests' or httpx's, by version); the hub's errors are OSErrors.
    client_error: type[Exception] = getattr(errors, "HTTPError", OSError)

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "on", "yes", "true"}
    try:
        folder = snapshot_download(repo_id=repo_id, allow_patterns=FILES, local_files_only=offline)
    except (OSError, ValueError, client_error) as exc:
        mode = " (HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache)" if offline else ""
        raise ModelLoadError(repo_id, f"could not be downloaded from the Hugging Face Hub{mode}: {exc}") from exc
    return Path(folder)
