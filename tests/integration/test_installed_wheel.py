"""The wheel a user installs (``pip install .``, ``uv tool install .``): one top-level package of the project's own,
typed, that sits beside PyPI's ``entrypoints`` (which Jupyter stacks need) without either shadowing the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

CHILD = """
import json, entrypoints, onepass_whisper
from onepass_whisper.entrypoints.api import Transcriber
try:
    import domain
    bare = domain.__file__
except ModuleNotFoundError:
    bare = None
print(json.dumps({"pypi": entrypoints.__file__, "has_entry_point": hasattr(entrypoints, "EntryPoint"),
                  "ours": onepass_whisper.__file__, "api": Transcriber.__module__, "bare_domain": bare}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")  # `make install` puts uv in the environment
    subprocess.run([str(uv), "build", "--quiet", "--wheel", "-o", str(out), str(REPO)], check=True, timeout=600)
    (built,) = out.glob("onepass_whisper-*.whl")
    return built


def test_the_wheel_holds_one_typed_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"onepass_whisper"}
    assert "onepass_whisper/py.typed" in names
    assert "onepass_whisper/domain/model.py" in names and "onepass_whisper/adapters/mlx/decoder.py" in names
    assert "onepass_whisper/adapters/mlx/edge_probes/base.json" in names  # package data: the word-edge probes


def test_installed_beside_pypi_entrypoints_both_import(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    # -S: no site-packages .pth files, so the checkout's editable install is out of the way; the environment's
    # packages (numpy, attrs and PyPI's entrypoints, a dev dependency) come after the installed wheel
    path = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    done = subprocess.run(
        [sys.executable, "-S", "-c", CHILD], cwd=tmp_path, env={**os.environ, "PYTHONPATH": path},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["has_entry_point"] and Path(result["pypi"]).name == "entrypoints.py"
    assert Path(result["ours"]).parent == target / "onepass_whisper"
    assert result["api"] == "onepass_whisper.entrypoints.api"
    assert result["bare_domain"] is None
