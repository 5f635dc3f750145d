"""Shared fixtures and the hypothesis profiles (``dev`` by default, ``ci`` under CI=true)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import onepass_whisper.adapters.mlx  # noqa: F401  # puts the optimized BLAS in place before any test imports mlx

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=500, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REPO = Path(__file__).resolve().parent.parent
EVAL_DIR = REPO.parent / "shared" / "data" / "eval"


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    """The shared evaluation corpus; tests that need it skip where it is absent."""
    if not EVAL_DIR.is_dir():
        pytest.skip(f"evaluation data not found at {EVAL_DIR}")
    return EVAL_DIR


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray instance for the whole session (2 CPUs, no dashboard), used by ``app transcribe-corpus`` in
    place of its own; its workers import this repository's modules (the tests' fakes included)."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    yield
    ray.shutdown()
