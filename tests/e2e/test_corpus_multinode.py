"""``app transcribe-corpus`` on a two-node Ray cluster (``ray.cluster_utils.Cluster``: two raylets on this machine).

The cluster runs in a child process (``python -m tests.e2e.test_corpus_multinode OUT``), since the test session
already holds its own Ray instance (``ray_local``). One CPU a node and two workers of one CPU put a worker on each
node; the fake audio source notes which node read each file and takes a moment a file, so that the second node can
be removed while it holds files. The child prints a JSON summary that the tests check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from onepass_whisper.domain.audio import Waveform
from tests.fakes import InMemoryAudioSource, tone

REPO = Path(__file__).resolve().parents[2]
FILES = 24
SECONDS_PER_FILE = 0.3  # the fake audio source's pause while "reading": the run lasts several seconds
REMOVE_AFTER = 4  # files done before the second node is removed


class NodeNotingAudioSource:
    """Serves every file as a tone, after a pause, and leaves ``<name>.<node id>`` in ``marker_dir``."""

    def __init__(self, marker_dir: Path, seconds: float) -> None:
        self.inner = InMemoryAudioSource({})
        self.marker_dir = marker_dir
        self.seconds = seconds

    def load(self, path: Path) -> Waveform:
        import ray

        (self.marker_dir / f"{path.name}.{ray.get_runtime_context().get_node_id()}").touch()
        time.sleep(self.seconds)
        return tone(2.0)

    def stream(self, path: Path) -> Iterator[NDArray[np.float32]]:
        yield self.load(path).samples


def child(out: Path, remove_node: bool) -> dict[str, Any]:
    """Run the command on a fresh two-node cluster; what happened, for the parent's checks."""
    import ray
    from ray.cluster_utils import Cluster
    from typer.testing import CliRunner

    from onepass_whisper.entrypoints.cli import app
    from onepass_whisper.entrypoints.container import Container
    from tests.fakes import FakeAligner, FakeDecoder

    folder, markers = out / "corpus", out / "markers"
    folder.mkdir(parents=True)
    markers.mkdir()
    for i in range(FILES):
        (folder / f"f{i:02d}.wav").touch()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])  # type: ignore[no-untyped-call]
    container = Container()
    container.override_providers(
        audio=NodeNotingAudioSource(markers, SECONDS_PER_FILE), decoder=FakeDecoder("hi"), aligner=FakeAligner()
    )
    removed: list[int] = []

    def remove_when_busy() -> None:
        manifest = out / "result" / "manifest.jsonl"
        while not manifest.exists() or manifest.read_text().count('"done"') < REMOVE_AFTER:
            time.sleep(0.05)
        removed.append(manifest.read_text().count('"done"'))
        cluster.remove_node(second, allow_graceful=False)

    watcher = threading.Thread(target=remove_when_busy, daemon=True)
    if remove_node:
        watcher.start()
    result = CliRunner().invoke(
        app,
        [
            "transcribe-corpus",
            str(folder),
            "-o",
            str(out / "result"),
            "-f",
            "txt",
            "--workers",
            "2",
            "--files-per-batch",
            "2",
            "--quiet",
        ],
        obj=container,
    )
    ray.shutdown()
    cluster.shutdown()  # type: ignore[no-untyped-call]
    lines = (out / "result" / "manifest.jsonl").read_text().splitlines()
    return {
        "exit_code": result.exit_code,
        "stderr": result.stderr,
        "nodes": nodes,
        "second": second.node_id,
        "removed_after": removed,
        "records": [json.loads(line) for line in lines],
        "read_on": sorted({p.suffix[1:] for p in markers.iterdir()}),
        "outputs": sorted(p.name for p in (out / "result").glob("*.txt")),
    }


def run_child(tmp_path: Path, remove_node: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tests.e2e.test_corpus_multinode", str(tmp_path / "run")]
    completed = subprocess.run(
        [*args, *(["--remove-node"] if remove_node else [])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return summary


def check_each_file_done_once(summary: dict[str, Any]) -> None:
    assert summary["exit_code"] == 0, summary["stderr"]
    names = [f"f{i:02d}.wav" for i in range(FILES)]
    done = [record["file"] for record in summary["records"] if record["status"] == "done"]
    assert sorted(done) == names  # every file, and each once
    assert [r for r in summary["records"] if r["status"] != "done"] == []
    assert summary["outputs"] == [name.replace(".wav", ".txt") for name in names]
    assert summary["stderr"].splitlines()[-1].startswith(f"{FILES} transcribed in ")


@pytest.mark.slow
def test_a_corpus_is_spread_over_both_nodes(tmp_path: Path) -> None:
    summary = run_child(tmp_path, remove_node=False)
    assert len(summary["nodes"]) == 2
    check_each_file_done_once(summary)
    assert summary["read_on"] == summary["nodes"]  # both nodes' workers read files


@pytest.mark.slow
def test_a_node_removed_mid_run_loses_no_file_and_repeats_none(tmp_path: Path) -> None:
    summary = run_child(tmp_path, remove_node=True)
    assert summary["removed_after"] and summary["removed_after"][0] < FILES  # removed while files were left
    check_each_file_done_once(summary)
    assert summary["second"] in summary["read_on"]  # it held files before it went
    assert summary["stderr"].splitlines() == [summary["stderr"].splitlines()[-1]]  # no file failed, none repeated


if __name__ == "__main__":
    print(json.dumps(child(Path(sys.argv[1]), "--remove-node" in sys.argv[2:])))
