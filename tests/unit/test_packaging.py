"""The project is imported as one package, ``onepass_whisper``: a module that imported a layer by its bare name
(``domain``, ``entrypoints``) would load a second copy of it from a checkout (two ``Word`` classes, two containers)
and would fail outright where the project is installed from a wheel, which has no such top-level names."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = frozenset({"domain", "application", "adapters", "entrypoints"})
SOURCES = ("domain", "application", "adapters", "entrypoints", "tests", "benchmarks")


def _bare_layer_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in LAYERS]
    return found


def test_every_module_imports_the_layers_through_the_package() -> None:
    offenders = [hit for top in SOURCES for path in (REPO / top).rglob("*.py") for hit in _bare_layer_imports(path)]
    assert offenders == []


def test_the_package_s_layers_are_the_repository_s_folders() -> None:
    package = REPO / "onepass_whisper"
    assert (package / "py.typed").is_file()
    for layer in LAYERS:
        assert (package / layer).resolve() == (REPO / layer).resolve()
