"""Starting up does not pay for the parts of mlx-whisper this product never runs, and mlx-whisper stays whole for
code that does: each case in a fresh interpreter (``sys.modules`` is what is being tested)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_loading_the_decoder_modules_skips_mlx_whispers_transcribe() -> None:
    heavy = _run(
        "import sys\n"
        "from onepass_whisper.adapters.mlx import bootstrap\n"
        "bootstrap()\n"
        "from onepass_whisper.adapters.mlx.decoder import MlxWhisperDecoder\n"
        "from onepass_whisper.adapters.mlx import load_decoder\n"
        "import mlx_whisper.load_models, mlx_whisper.writers\n"
        "print(sorted(m for m in ('mlx_whisper.transcribe', 'mlx_whisper.timing', 'scipy.signal', 'numba')"
        " if m in sys.modules))"
    )
    assert heavy == "[]"  # scipy.signal and numba: ~1 s of every start on a small CPU


@pytest.mark.parametrize(
    "use",
    [
        "import mlx_whisper\nfunction = mlx_whisper.transcribe",
        "from mlx_whisper import transcribe as function",
        # benchmarks/engines.py's way: the submodule first, then the package's function of the same name
        "import mlx_whisper\nfrom mlx_whisper.transcribe import ModelHolder\nfunction = mlx_whisper.transcribe",
    ],
)
def test_mlx_whisper_is_whole_for_code_that_wants_it(use: str) -> None:
    out = _run(
        "import onepass_whisper.adapters.mlx\n"
        "onepass_whisper.adapters.mlx.bootstrap()\n"  # as the composition root does first
        f"{use}\n"
        "import mlx_whisper\n"
        "print(callable(function), function.__name__, mlx_whisper.__version__, mlx_whisper.audio.N_SAMPLES)"
    )
    assert out.split()[:2] == ["True", "transcribe"] and out.split()[3] == "480000"
