"""Every module the product runs is imported by name, so that import-linter sees it: none is loaded from a file path
(as ``adapters/writers.py`` once loaded mlx-whisper's writers, out of the contracts' sight)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "application", "adapters", "entrypoints")
BY_PATH = re.compile(r"spec_from_file_location|SourceFileLoader|load_source|runpy\.run_path")


def test_no_module_is_loaded_by_file_path() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BY_PATH.search(line)
    ]
    assert offenders == []
