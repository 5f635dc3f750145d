"""Safety (issue #8): no pickle is ever unpickled, output names stay in the output folder, no shell, hub ids checked.

Pickle payloads here are real: unpickling them would create a marker file, and each test checks that it does not
exist afterwards (beside the error the user gets). The model loading through MLX is checked in
``tests/integration/test_safety_mlx.py``.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from onepass_whisper.adapters.models import CachedModelSource, hub, read_alignment_heads
from onepass_whisper.domain.errors import ModelLoadError
from onepass_whisper.entrypoints.inputs import find_inputs
from tests.unit.test_model_source import DIMS

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("domain", "application", "adapters", "entrypoints")


class Payload:
    """Unpickling this creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def object_npz(path: Path, marker: Path, member: str) -> Path:
    """An .npz whose ``member`` is an object array holding a payload (numpy stores it as a pickle)."""
    payload = np.empty(2, dtype=object)
    payload[0], payload[1] = Payload(marker), 1
    members: dict[str, Any] = {member: payload}
    with path.open("wb") as sink:
        np.savez(sink, **members)
    return path


def mlx_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(DIMS.to_config()))
    return folder


# ------------------------------------------------------------------------------------------ no pickle, ever


def test_alignment_heads_in_an_npz_object_array_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    folder = mlx_folder(tmp_path / "model")
    object_npz(folder / "weights.npz", marker, "alignment_heads")

    with pytest.raises(ModelLoadError, match="Object arrays cannot be loaded when allow_pickle=False"):
        read_alignment_heads(folder)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.bin", "model.bin as a PyTorch zip"])
def test_a_pickle_named_model_bin_is_refused_as_a_ctranslate2_model(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "unpickled"
    folder = tmp_path / "model"
    folder.mkdir()
    data = pickle.dumps({"weights": Payload(marker)})
    if name.endswith("zip"):  # torch.save's format: a zip archive holding data.pkl
        import zipfile

        with zipfile.ZipFile(folder / "model.bin", "w") as archive:
            archive.writestr("archive/data.pkl", data)
    else:
        (folder / "model.bin").write_bytes(data)

    with pytest.raises(ModelLoadError, match="is not a usable CTranslate2 Whisper model"):
        CachedModelSource(tmp_path / "cache").resolve(str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "weights.pkl", "model.ckpt"])
def test_pickle_weight_files_are_never_looked_at(tmp_path: Path, weights: str) -> None:
    marker = tmp_path / "unpickled"
    folder = mlx_folder(tmp_path / "model")
    (folder / weights).write_bytes(pickle.dumps(Payload(marker)))

    with pytest.raises(ModelLoadError, match="holds neither config.json"):
        CachedModelSource(tmp_path / "cache").resolve(str(folder))
    assert not marker.exists()


def test_only_safe_files_are_downloaded_from_the_hub() -> None:
    """mlx-whisper layout (safetensors, npz read without pickle), CTranslate2's own format, JSON; nothing else."""
    assert sorted(hub.FILES) == sorted(
        ["config.json", "weights.safetensors", "weights.npz", "model.bin", "alignment_heads.json"]
    )


# ------------------------------------------------------------------------------------------- hub ids


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/../../etc",
        "/etc/passwd",
        "a/b/c",
        "https://huggingface.co/a/b",
        "a/b;rm -rf ~",
        "a b/c",
        "-a/b",
        "a/b\n",
        "owner/" + "x" * 97,
    ],
)
def test_a_bad_hub_id_never_reaches_the_hub(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def snapshot_download(**_kwargs: object) -> str:
        raise AssertionError(f"the hub was asked for {name!r}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(ModelLoadError, match="not a valid Hugging Face repository id"):
        hub.download(name)


# ------------------------------------------------------------------------------------------- output names


NAMES = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\0"), min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..") and len(n.encode()) < 200
)


@given(names=st.lists(NAMES, min_size=1, max_size=4, unique=True), in_folder=st.booleans())
@example(names=["..wav", "...wav", ".wav", "-x.wav", "a.wav", "a.WAV", "a.mp3"], in_folder=False)
@example(names=["..wav", "...wav", "....mp3", "--.wav"], in_folder=True)
def test_output_names_never_leave_the_output_folder(names: list[str], in_folder: bool) -> None:
    """Any file names (dots, dashes, spaces, unicode, control characters), given by name or found in a folder."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "in"
        folder.mkdir()
        paths = []
        for name in names:
            path = folder / "sub" / name if in_folder else folder / name
            path.parent.mkdir(exist_ok=True)
            path.touch()
            paths.append(path)
        jobs = find_inputs([folder] if in_folder else paths).jobs
        out = Path(scratch) / "out"
        expected = (
            {str(p) for p in paths if not p.name.startswith(".") and p.suffix.lower() in _audio()}
            if in_folder
            else {str(p) for p in paths}
        )
        assert {str(job.source) for job in jobs} == expected
        for job in jobs:
            assert not job.name.is_absolute() and ".." not in job.name.parts
            target = os.path.normpath((out / job.name).with_name(f"{job.name.name}.txt"))
            assert target.startswith(str(out) + os.sep), (job, target)
        assert len({job.name for job in jobs}) == len(jobs)


def _audio() -> frozenset[str]:
    from onepass_whisper.entrypoints.inputs import AUDIO_SUFFIXES

    return AUDIO_SUFFIXES


# ------------------------------------------------------------------------------------------- no shell


def _python_files() -> list[Path]:
    files = [p for package in PRODUCT for p in (REPO / package).rglob("*.py")]
    files += [p for folder in ("tests", "benchmarks", "scripts") for p in (REPO / folder).rglob("*.py")]
    return sorted(files)


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """Every call in ``path`` with its callee spelled out (``os.system``, ``subprocess.run``, ...)."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call):
            calls.append((ast.unparse(node.func), node))
    return calls


def test_the_source_tree_was_found() -> None:
    assert len(_python_files()) > 30
    assert {p.name for p in _python_files()} >= {"cli.py", "writers.py", "source.py", "test_safety.py"}


def test_no_shell_is_ever_invoked() -> None:
    """No ``shell=True``, no ``os.system``/``os.popen``/``subprocess.getoutput``, no ``os.exec*``/``spawn*``."""
    shells = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "commands.getoutput"}
    found = []
    for path in _python_files():
        for callee, call in _calls(path):
            shell = any(
                k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                for k in call.keywords
            )
            if shell or callee in shells or callee.startswith(("os.exec", "os.spawn")):
                found.append(f"{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)}")
    assert found == []


def test_the_product_never_unpickles_nor_evaluates() -> None:
    """The application's own code: no pickle-family import, no ``allow_pickle=True``, no eval/exec, no torch."""
    found = []
    for path in (p for package in PRODUCT for p in (REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [
                    f"{where}: import {m}"
                    for m in modules
                    if m.split(".")[0]
                    in {"pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal", "joblib", "torch"}
                ]
            elif isinstance(node, ast.Call):
                callee = ast.unparse(node.func)
                if callee in {"eval", "exec", "compile", "__import__"}:
                    found.append(f"{where}: {callee}()")
                if any(
                    k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords
                ):
                    found.append(f"{where}: {ast.unparse(node)}")
    assert found == []


def test_the_checks_above_see_what_they_look_for(tmp_path: Path) -> None:
    """The scanners find a planted offence (so an empty result above means something)."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import os, subprocess\nos.system('ls')\nsubprocess.run('ls', shell=True)\n"
        "subprocess.run(['ls'], shell=False)\nimport numpy as np\nnp.load('x', allow_pickle=True)\n"
    )
    callees = [callee for callee, _ in _calls(planted)]
    assert callees == ["os.system", "subprocess.run", "subprocess.run", "np.load"]
    shell_calls = [c for _, c in _calls(planted) if any(k.arg == "shell" for k in c.keywords)]
    assert [ast.unparse(c.keywords[0].value) for c in shell_calls] == ["True", "False"]
