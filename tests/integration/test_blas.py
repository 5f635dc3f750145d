"""``enable_fast_blas`` in fresh processes (the BLAS is chosen once per process, before ``mlx`` is imported): what it
reports, which library ``libmlx`` really binds ``cblas_sgemm`` to (the loader's own trace, ``LD_DEBUG=bindings``), and
that MLX's products stay right. No timings here: ``benchmarks/blas_speed.py`` measures."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from onepass_whisper.adapters.mlx.blas import GFORTRAN_SONAME, cpu_has_avx512, dynamic_strings, rename_soname

REPO = Path(__file__).resolve().parents[2]


def _has(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or platform.machine() != "x86_64", reason="Linux x86_64 only"
    ),
    pytest.mark.skipif(not _has("mlx-cpu"), reason="the mlx-cpu wheel is not installed"),
    pytest.mark.skipif(_has("mlx-cuda-12") or _has("mlx-cuda-13"), reason="mlx-cuda is installed"),
]

# Runs in the child: choose the BLAS, then check MLX's float32 matmul (cblas_sgemm) and a LAPACK call against numpy.
CHILD = """
import json, sys
{before}
from onepass_whisper.adapters.mlx import bootstrap
from onepass_whisper.adapters.mlx.blas import enable_fast_blas, fast_blas_failure, global_provider
from onepass_whisper.entrypoints.settings import Settings
loaded = bootstrap(Settings.from_environment().fast_blas)
again = enable_fast_blas()
import mlx.core as mx
import numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((300, 200), dtype=np.float32)
b = rng.standard_normal((200, 100), dtype=np.float32)
exact = a.astype(np.float64) @ b.astype(np.float64)
product = np.array(mx.array(a) @ mx.array(b))
# the shapes of the CPU path's own row-major products (OpenBLAS's small-matrix "direct" sgemm takes some of them)
for m, k, n in ((16, 64, 64), (512, 512, 512), (1, 384, 1536)):
    x, y = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    assert np.allclose(np.array(mx.array(x) @ mx.array(y)), x @ y, rtol=1e-3, atol=1e-3), (m, k, n)
square = rng.standard_normal((64, 64), dtype=np.float32)
inverse = np.array(mx.linalg.inv(mx.array(square), stream=mx.cpu))
print(json.dumps({{
    "loaded": loaded, "again": again, "failure": fast_blas_failure(), "provider": global_provider("cblas_sgemm"),
    "matmul_error": float(np.abs(product - exact).max() / np.abs(exact).max()),
    "inverse_error": float(np.abs(inverse @ square - np.eye(64)).max()),
}}))
"""


def run_child(tmp_path: Path, before: str = "", **env: str) -> tuple[dict[str, Any], str]:
    """Run CHILD under the loader's binding trace; return its JSON and the library libmlx bound cblas_sgemm to."""
    trace = tmp_path / "ld"
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    dropped = ("ONEPASS_BLAS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "LD_PRELOAD")
    environment = {k: v for k, v in os.environ.items() if k not in dropped}
    environment |= {"PYTHONPATH": path, "LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(trace), **env}
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(before=before)],
        env=environment, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    bound = re.compile(r"binding file \S*/libmlx\.so \[0\] to (\S+) \[0\]: normal symbol `cblas_sgemm'")
    targets = {m.group(1) for log in tmp_path.glob("ld.*") for m in bound.finditer(log.read_text(errors="replace"))}
    assert len(targets) == 1, targets
    return json.loads(done.stdout.strip().splitlines()[-1]), targets.pop()


def assert_products_right(result: dict[str, Any]) -> None:
    assert result["matmul_error"] < 1e-5
    assert result["inverse_error"] < 1e-3


def test_fast_blas_is_loaded_and_libmlx_binds_to_it(tmp_path: Path) -> None:
    result, bound_to = run_child(tmp_path)
    assert result["failure"] is None
    assert result["loaded"].startswith("OpenBLAS ") and "cmeel-openblas" in result["loaded"]
    assert result["again"] == result["loaded"]  # settled once per process
    assert Path(bound_to).name == "libopenblas.so.0"
    assert Path(result["provider"]).resolve() == Path(bound_to).resolve()
    assert_products_right(result)


def test_off_switch_keeps_the_wheels_reference_blas(tmp_path: Path) -> None:
    result, bound_to = run_child(tmp_path, ONEPASS_BLAS="off")
    assert (result["loaded"], result["failure"], result["provider"]) == (None, None, None)
    assert Path(bound_to).parent.name == "mlx_cpu.libs" and Path(bound_to).name.startswith("libblas")
    assert_products_right(result)


def test_thread_count_follows_openblas_num_threads(tmp_path: Path) -> None:
    result, _ = run_child(tmp_path, OPENBLAS_NUM_THREADS="1")
    assert ", 1 thread)" in result["loaded"]
    assert_products_right(result)


def test_without_memfd_a_temporary_file_is_used(tmp_path: Path) -> None:
    result, bound_to = run_child(tmp_path, before="import os; del os.memfd_create")
    assert result["failure"] is None and Path(bound_to).name == "libopenblas.so.0"
    assert_products_right(result)


def test_after_mlx_is_imported_it_is_too_late_and_says_so(tmp_path: Path) -> None:
    result, bound_to = run_child(tmp_path, before="import mlx.core")
    assert result["loaded"] is None
    assert "imported before" in result["failure"]
    assert Path(bound_to).name.startswith("libblas")
    assert_products_right(result)


def _bundled_gfortran() -> Path:
    files = metadata.distribution("mlx-cpu").files or []
    found = [Path(str(f.locate())) for f in files if f.name.startswith("libgfortran")]
    if not found:
        pytest.skip("this mlx-cpu wheel bundles no libgfortran")
    return found[0]


def test_a_release_that_needs_avx512_is_refused_on_a_cpu_without_it(tmp_path: Path) -> None:
    """cmeel-openblas 0.3.31 ran AVX-512 code on an AMD Zen 3 and killed the process (SIGILL) at the first small
    matmul: such a release is refused there, with the reason, and MLX keeps its own BLAS."""
    pretend = (
        "import importlib.metadata as m; real = m.version; "
        "m.version = lambda d: '0.3.31' if d == 'cmeel-openblas' else real(d)"
    )
    result, bound_to = run_child(tmp_path, before=pretend)
    if cpu_has_avx512():
        assert result["loaded"] is not None and result["failure"] is None
    else:
        assert result["loaded"] is None and "AVX-512" in result["failure"]
        assert Path(bound_to).parent.name == "mlx_cpu.libs"
    assert_products_right(result)


def test_avx512_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    zen3 = tmp_path / "zen3"
    zen3.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma vaes\n")
    skylake = tmp_path / "skylake"
    skylake.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512dq\n")
    assert not cpu_has_avx512(zen3)
    assert cpu_has_avx512(skylake)
    assert not cpu_has_avx512(tmp_path / "missing")


def test_rename_soname_changes_only_the_soname() -> None:
    image = _bundled_gfortran().read_bytes()
    soname, needed = dynamic_strings(image)
    assert soname is not None and soname != GFORTRAN_SONAME
    renamed = rename_soname(image, GFORTRAN_SONAME)
    assert len(renamed) == len(image)
    assert dynamic_strings(renamed) == (GFORTRAN_SONAME, needed)
    assert sum(x != y for x, y in zip(image, renamed)) <= len(soname)


def test_rename_soname_refuses_what_it_cannot_do() -> None:
    image = _bundled_gfortran().read_bytes()
    with pytest.raises(ValueError, match="longer"):
        rename_soname(image, "x" * 200)
    with pytest.raises(ValueError, match="ELF"):
        rename_soname(b"#!/bin/sh\n" * 10, GFORTRAN_SONAME)


def test_the_library_s_model_loading_puts_the_fast_blas_in_place(tmp_path: Path) -> None:
    """The composition root's bootstrap, not an import side effect, loads the BLAS: a user of the library API who
    never imports ``adapters.mlx`` still gets it (a container path that imported mlx first kept netlib's)."""
    code = (
        "from onepass_whisper.entrypoints.api import Transcriber\n"
        "Transcriber('tiny.en')\n"
        "import mlx.core, sys\n"
        "from onepass_whisper.adapters.mlx.blas import global_provider\n"
        "print(global_provider('cblas_sgemm'))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("ONEPASS_BLAS", "LD_PRELOAD")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip().splitlines()[-1]).name == "libopenblas.so.0"
