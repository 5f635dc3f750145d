"""``JsonLagStore``: a model's estimated lag kept between runs, in a small JSON file of the model cache.

A run too short to estimate the model's lag (``application/run_lag.py``) takes the one kept from an earlier run of
the same model. Beside it, ``JsonHeadStore`` keeps the heads chosen for the model's character rows
(``adapters/dtw/char_heads.py``), whose lag is kept apart. The files are keyed by the model's name, a folder by its
resolved path (a copy elsewhere is another model: its lag is estimated afresh), and live under the cache's
``lags/``, never in a user's own model folder. A cache that cannot be written loses nothing but the keeping: the
run's times do not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path

from attrs import frozen

LAGS_FOLDER = "lags"


@frozen
class JsonLagStore:
    """The kept lag of one model (implements ``LagStore``): ``path`` holds ``{"model", "lag_seconds", "boundaries"}``."""

    path: Path
    model: str = ""

    @classmethod
    def for_model(cls, cache_dir: Path, name: str, rows: str = "") -> JsonLagStore:
        """The store of the model ``name`` (built-in, hub id or folder, as ``--model`` takes it) under
        ``cache_dir``; a folder is keyed by its resolved path, so that any spelling of it finds the same file.
        ``rows``: which attention rows the lag is of, where not the word pieces' (``"chars"``: the character-forcing
        pass's, which attend later): each kind keeps its own."""
        stem, model = _stem(cache_dir, name)
        suffix = f"-{rows}" if rows else ""
        return cls(stem.with_name(f"{stem.name}{suffix}.json"), model)

    def _read(self) -> tuple[float, int] | None:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            return float(record["lag_seconds"]), int(record["boundaries"])
        except (OSError, ValueError, KeyError, TypeError):  # none kept, or unreadable: as if none
            return None

    def load(self) -> float | None:
        kept = self._read()
        return None if kept is None else kept[0]

    def save(self, lag: float, boundaries: int) -> None:
        kept = self._read()
        if kept is not None and kept[1] >= boundaries:
            return
        _write(self.path, {"model": self.model, "lag_seconds": lag, "boundaries": boundaries})


@frozen
class JsonHeadStore:
    """The heads chosen for one model's character rows (implements ``char_heads.HeadStore``): ``path`` holds
    ``{"model", "heads"}``. The character rows' kept lag (``stale``) was measured on the heads used before the
    choice: saving a choice removes it, and the run's own estimate, or the next, is kept instead."""

    path: Path
    stale: Path
    model: str = ""

    @classmethod
    def for_model(cls, cache_dir: Path, name: str) -> JsonHeadStore:
        """The store of the model ``name`` under ``cache_dir``, beside its lags (``JsonLagStore.for_model``)."""
        stem, model = _stem(cache_dir, name)
        return cls(
            stem.with_name(f"{stem.name}-chars-heads.json"),
            JsonLagStore.for_model(cache_dir, name, "chars").path,
            model,
        )

    def load(self) -> list[tuple[int, int]] | None:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            return [(int(layer), int(head)) for layer, head in record["heads"]]
        except (OSError, ValueError, KeyError, TypeError):  # none kept, or unreadable: as if none
            return None

    def save(self, heads: list[tuple[int, int]]) -> None:
        _write(self.path, {"model": self.model, "heads": [list(h) for h in heads]})
        with suppress(OSError):
            self.stale.unlink(missing_ok=True)


def _stem(cache_dir: Path, name: str) -> tuple[Path, str]:
    """The model's files' common path under ``cache_dir`` (no suffix), and the model as it is keyed: a folder by its
    resolved path, so that any spelling of it finds the same files."""
    folder = Path(name).expanduser()
    model = str(folder.resolve()) if folder.exists() else name
    key = hashlib.sha256(model.encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(model).name)[:40]
    return cache_dir / LAGS_FOLDER / f"{slug}-{key}", model


def _write(path: Path, record: dict[str, object]) -> None:
    """``record`` as ``path``'s JSON, atomically: a concurrent run reads the old or the new file. A cache that cannot
    be written keeps nothing."""
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(scratch, path)
