"""``app serve`` under concurrent clients: throughput and latency, against one request at a time and against one
``app transcribe`` process per file; and whether the served words and times are those of ``app transcribe``.

    PYTHONPATH=. .venv/bin/python -m benchmarks.serve --clients 1,4,16 --requests 16 --json out/serve.json
    PYTHONPATH=. .venv/bin/python -m benchmarks.serve --model mlx-community/whisper-large-v3-turbo --batch-size 64 \\
        --requests 64 --clients 1,16,64       # on a GPU machine

The requests are real speech of different lengths from ``../shared/data/eval`` (``--requests`` utterances spread
evenly over the sorted durations; ``--longform`` adds the two long files). One server process serves every run;
for each N in ``--clients``, N client threads send the requests (each takes the next one as soon as its previous
answer came): the run's throughput is the requests' audio seconds over its wall time, its latency each request's
time from sending to answer. N = 1 is "one at a time to the same server". Then each file is transcribed by its
own ``app transcribe`` process, N at a time (``--cli-parallel``, default the largest N; ``--no-cli`` skips it),
and the words and times of each served answer (verbose_json, word granularity) are compared with that process's
JSON output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import openai

REPO = Path(__file__).resolve().parent.parent
EVAL = REPO.parent / "shared" / "data" / "eval"


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    files = _pick(Path(args.data), args.requests, args.longform)
    audio_seconds = sum(seconds for _, seconds in files)
    print(f"{len(files)} requests, {audio_seconds:.1f} s of audio ({files[0][1]:.1f}-{files[-1][1]:.1f} s each)")
    clients = [int(n) for n in args.clients.split(",")]
    packs = [float(p) for p in str(args.pack_seconds).split(",")]
    report: dict[str, Any] = {
        "model": args.model,
        "batch_size": args.batch_size,
        "requests": len(files),
        "audio_seconds": audio_seconds,
        "runs": [],
    }
    served: dict[float, dict[Path, list[tuple[str, float, float]]]] = {pack: {} for pack in packs}
    for repeat in range(args.repeats):
        for pack in packs if repeat % 2 == 0 else packs[::-1]:  # alternating: a shared machine's load drifts
            with _Server(args.model, args.batch_size, args.gather_ms, pack) as server:
                _send(server, files[0][0])  # warm-up: first-call costs (imports, kernels) are nobody's latency
                for n in clients:
                    run = {"pack_seconds": pack, "repeat": repeat, **_run(server, files, n, served[pack])}
                    report["runs"].append(run)
                    print(
                        f"server (pack {pack:g} s), {n:>3} clients: {run['throughput']:6.1f} audio s/s, p50 "
                        f"{run['p50']:.2f} s, p95 {run['p95']:.2f} s, wall {run['wall']:.1f} s, mean batch "
                        f"{run['mean_batch']:.1f} windows from {run['mean_requests']:.1f} requests"
                    )
    _ratios(report["runs"], clients, packs)
    if not args.no_cli:
        parallel = args.cli_parallel or max(clients)
        cli = _cli_runs(args.model, args.batch_size, files, parallel)
        report["cli"] = {k: v for k, v in cli.items() if k != "words"}
        print(
            f"app transcribe, one process a file, {parallel} at once: {cli['throughput']:6.1f} audio s/s, "
            f"p50 {cli['p50']:.2f} s, p95 {cli['p95']:.2f} s, wall {cli['wall']:.1f} s"
        )
        report["agreement"] = [_agreement(pack, served[pack], cli["words"], files, Path(args.data)) for pack in packs]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))


def _ratios(runs: list[dict[str, Any]], clients: list[int], packs: list[float]) -> None:
    """Each setting's N-client throughput over its one-client throughput, and packing's over no packing's, from
    the median of the repeats."""

    def median(pack: float, n: int) -> float:
        values = sorted(float(r["throughput"]) for r in runs if r["pack_seconds"] == pack and r["clients"] == n)
        return values[len(values) // 2]

    for pack in packs:
        for n in clients[1:]:
            print(f"pack {pack:g} s: {n} clients / 1 client: {median(pack, n) / median(pack, clients[0]):.2f}x")
    for pack in packs[1:]:
        for n in clients:
            print(f"{n} clients: pack {pack:g} s / pack {packs[0]:g} s: {median(pack, n) / median(packs[0], n):.2f}x")


def _agreement(
    pack: float,
    served: dict[Path, list[tuple[str, float, float]]],
    cli: dict[Path, list[tuple[str, float, float]]],
    files: list[tuple[Path, float]],
    data: Path,
) -> dict[str, Any]:
    """How the served words of one setting compare with ``app transcribe``'s: files with the same words and
    times, the same words, and how far apart the edges of the same words are."""
    same = sum(served[path] == cli[path] for path, _ in files)
    texts = [path for path, _ in files if [w for w, _, _ in served[path]] == [w for w, _, _ in cli[path]]]
    shifts = [
        abs(a - b)
        for path in texts
        for (_, *ours), (_, *theirs) in zip(served[path], cli[path])
        for a, b in zip(ours, theirs)
    ]
    result: dict[str, Any] = {
        "pack_seconds": pack,
        "same_words_and_times": same,
        "same_words": len(texts),
        "edge_shift_mean_ms": 1000 * sum(shifts) / len(shifts) if shifts else None,
        "differs": [str(path.relative_to(data)) for path, _ in files if path not in texts],
    }
    print(
        f"pack {pack:g} s: same words and times as app transcribe: {same} of {len(files)} files; same words "
        f"{len(texts)}; their edges {result['edge_shift_mean_ms'] or 0:.1f} ms apart on average"
    )
    for name in result["differs"]:
        print(f"  words differ: {name}")
    return result


def _pick(data: Path, count: int, longform: bool) -> list[tuple[Path, float]]:
    """``count`` utterances spread evenly over the sorted durations (different lengths), shortest first."""
    found = []
    for meta in sorted(data.glob("*/*.json")):
        if meta.parent.name == "longform":
            continue
        duration = json.loads(meta.read_text()).get("duration")
        wav = meta.with_suffix(".wav")
        if duration and wav.is_file():
            found.append((wav, float(duration)))
    if not found:
        raise SystemExit(f"no evaluation data in {data}")
    found.sort(key=lambda item: item[1])
    step = max(1, len(found) // count)
    picked = found[::step][:count]
    if longform:
        picked += [(wav, _wav_seconds(wav)) for wav in sorted((data / "longform").glob("*.wav"))]
    return sorted(picked, key=lambda item: item[1])


def _wav_seconds(path: Path) -> float:
    import soundfile

    return float(soundfile.info(str(path)).duration)


class _Server:
    """``app serve`` in a child process on a free loopback port."""

    def __init__(self, model: str, batch_size: int, gather_ms: float, pack_seconds: float = 0.0) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.command = [
            sys.executable,
            "-m",
            "onepass_whisper",
            "serve",
            "--port",
            str(self.port),
            "--model",
            model,
            "--batch-size",
            str(batch_size),
            "--gather-ms",
            str(gather_ms),
            "--max-requests",
            "1024",
            "--pack-seconds",
            str(pack_seconds),
        ]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> _Server:
        self.process = subprocess.Popen(self.command, cwd=REPO)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}")
            try:
                if httpx2.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0, timeout=3600)
                    return self
            except httpx2.TransportError:
                time.sleep(0.3)
        raise SystemExit("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx2.get(f"{self.url}/health", timeout=10).json()
        return body


def _send(server: _Server, path: Path) -> list[tuple[str, float, float]]:
    with path.open("rb") as audio:
        result = server.client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["word"]
        )
    return [(w.word, w.start, w.end) for w in result.words or []]


def _run(
    server: _Server, files: list[tuple[Path, float]], clients: int, served: dict[Path, list[tuple[str, float, float]]]
) -> dict[str, Any]:
    latencies: list[float] = []
    lock = threading.Lock()
    before = server.health()

    def one(path: Path) -> None:
        started = time.perf_counter()
        words = _send(server, path)
        with lock:
            latencies.append(time.perf_counter() - started)
            served[path] = words

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, [path for path, _ in files]))
    wall = time.perf_counter() - started
    after = server.health()
    batches = after["decoded_batches"] - before["decoded_batches"]
    return {
        "clients": clients,
        "wall": wall,
        "throughput": sum(s for _, s in files) / wall,
        "p50": _percentile(latencies, 50),
        "p95": _percentile(latencies, 95),
        "batches": batches,
        "mean_batch": (after["decoded_windows"] - before["decoded_windows"]) / max(batches, 1),
        "mean_requests": (after["batch_requests"] - before["batch_requests"]) / max(batches, 1),
    }


def _cli_runs(model: str, batch_size: int, files: list[tuple[Path, float]], parallel: int) -> dict[str, Any]:
    """Each file in its own ``app transcribe`` process (model loaded each time), ``parallel`` at once."""
    out = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    latencies: list[float] = []
    words: dict[Path, list[tuple[str, float, float]]] = {}

    def one(number: int, path: Path) -> None:
        folder = out / str(number)
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "onepass_whisper",
                "transcribe",
                str(path),
                "--model",
                model,
                "--batch-size",
                str(batch_size),
                "-o",
                str(folder),
                "-f",
                "json",
                "--quiet",
            ],
            cwd=REPO,
            check=True,
            env={**os.environ},
        )
        latencies.append(time.perf_counter() - started)
        document = json.loads((folder / f"{path.stem}.json").read_text())
        words[path] = [
            (w["word"].strip(), w["start"], w["end"])
            for segment in document["segments"]
            for w in segment.get("words", [])
        ]

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda item: one(*item), enumerate(path for path, _ in files)))
    wall = time.perf_counter() - started
    return {
        "parallel": parallel,
        "wall": wall,
        "throughput": sum(s for _, s in files) / wall,
        "p50": _percentile(latencies, 50),
        "p95": _percentile(latencies, 95),
        "words": words,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gather-ms", type=float, default=50.0)
    parser.add_argument(
        "--pack-seconds", default="0", help="the server's --pack-seconds; comma-separated: one server each, in turn"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting, alternating")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=16, help="utterances sent in each run")
    parser.add_argument("--longform", action="store_true", help="also send the two long-form files")
    parser.add_argument("--data", default=str(EVAL))
    parser.add_argument("--no-cli", action="store_true", help="skip the app transcribe runs")
    parser.add_argument("--cli-parallel", type=int, default=0, help="app transcribe processes at once")
    parser.add_argument("--json", help="write the numbers here")
    return parser


if __name__ == "__main__":
    main()
