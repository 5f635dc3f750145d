"""Long-form throughput, memory and word-timing accuracy: ours against mlx-whisper and faster-whisper.

    PYTHONPATH=. .venv/bin/python -m benchmarks.longform --repeats 3 --json out/longform.json

Each engine runs in its own process (a fresh interpreter per run, so peak RSS is that engine's alone); the order
of engines is reversed on every other repeat, so slow drift of the machine does not favour one engine. Accuracy is
scored by ``application.evaluation``, the same code as ``app eval``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from benchmarks.engines import EngineRun, FileOutput, run_engine
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import Hypothesis, Metrics, Reference, TimedWord, score_corpus
from onepass_whisper.entrypoints.eval_command import format_tables, metrics_record, read_corpus

REPO = Path(__file__).resolve().parent.parent
LONGFORM = REPO.parent / "shared" / "data" / "eval" / "longform"
ENGINES = (
    "onepass", "onepass-phonetic", "onepass-chars", "mlx-whisper", "mlx-whisper-nocond",
    "fw-f32", "fw-int8", "fw-batched-f32", "fw-batched-int8",
)  # fmt: skip


@attrs.frozen
class Measured:
    """One worker's run and its process's peak resident memory."""

    run: EngineRun
    peak_rss_mb: float


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    files = [Path(f) for f in args.files] if args.files else sorted(LONGFORM.glob("*.wav"))
    if not files:
        raise SystemExit(f"no long-form files: pass --files, or provide {LONGFORM}")
    if args.worker:
        _work(args.worker, args.model, files, args.batch_size, args.cpu_threads, Path(args.result))
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    runs: dict[str, list[Measured]] = {e: [] for e in engines}
    for repeat in range(args.repeats):
        for engine in engines if repeat % 2 == 0 else engines[::-1]:
            measured = _spawn(engine, args, files)
            runs[engine].append(measured)
            print(
                f"repeat {repeat + 1}/{args.repeats} {engine}: {_speed(measured.run):.1f}x realtime, "
                f"{measured.run.wall_seconds:.1f} s, peak RSS {measured.peak_rss_mb:.0f} MB",
                file=sys.stderr,
            )
    accuracy = {engine: _accuracy(files, measured[-1].run.outputs) for engine, measured in runs.items()}
    print(speed_table(runs))
    print()
    print(format_tables(accuracy, label="engine"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        record = {
            "files": [str(f) for f in files],
            "model": args.model,
            "repeats": args.repeats,
            "runs": {e: [_run_record(m) for m in ms] for e, ms in runs.items()},
            "accuracy": {e: metrics_record(m) for e, m in accuracy.items()},
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def speed_table(runs: dict[str, list[Measured]]) -> str:
    """Median throughput over repeats (min-max beside it), its ratio to ours, load time and peak RSS."""
    medians = {e: statistics.median(_speed(m.run) for m in ms) for e, ms in runs.items() if ms}
    ours = medians.get("onepass")
    lines = [
        "| engine | settings | audio s | wall s | × realtime (min-max) | ours ÷ engine | load s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, measured in runs.items():
        if not measured:
            continue
        speeds = [_speed(m.run) for m in measured]
        wall = statistics.median(m.run.wall_seconds for m in measured)
        ratio = f"{ours / medians[engine]:.2f}" if ours else "–"
        lines.append(
            f"| {engine} | {measured[-1].run.note} | {measured[-1].run.audio_seconds:.0f} | {wall:.1f} "
            f"| {medians[engine]:.1f} ({min(speeds):.1f}-{max(speeds):.1f}) | {ratio} "
            f"| {statistics.median(m.run.load_seconds for m in measured):.1f} "
            f"| {max(m.peak_rss_mb for m in measured):.0f} |"
        )
    return "\n".join(lines)


def _speed(run: EngineRun) -> float:
    return run.audio_seconds / run.wall_seconds


def _accuracy(files: Sequence[Path], outputs: dict[str, FileOutput]) -> Metrics:
    stems = {f.stem for f in files}
    references: list[Reference] = []
    for folder in sorted({f.parent for f in files}):
        references += [u.reference for u in read_corpus(folder) if u.reference.name in stems]
    hypotheses = {
        stem: Hypothesis(out.text, (TimedWord(w, s, e) for w, s, e in out.words)) for stem, out in outputs.items()
    }
    return score_corpus(references, hypotheses, WhisperTextMetrics()).overall


def _spawn(engine: str, args: argparse.Namespace, files: Sequence[Path]) -> Measured:
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "benchmarks.longform", "--worker", engine, "--result", str(result)]
        batch = args.fw_batch_size if engine.startswith("fw-batched") else args.batch_size
        command += ["--model", args.model, "--batch-size", str(batch), "--cpu-threads", str(args.cpu_threads)]
        command += ["--files", *map(str, files)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        subprocess.run(command, check=True, cwd=REPO, env=env)
        return _measured(json.loads(result.read_text(encoding="utf-8")))


def _work(engine: str, model: str, files: Sequence[Path], batch_size: int, cpu_threads: int, result: Path) -> None:
    run = run_engine(engine, model, files, batch_size, cpu_threads)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    result.write_text(json.dumps(_run_record(Measured(run, peak_rss_mb))), encoding="utf-8")


def _run_record(measured: Measured) -> dict[str, Any]:
    return attrs.asdict(measured, recurse=True)


def _measured(record: dict[str, Any]) -> Measured:
    run = record["run"]
    outputs = {
        stem: FileOutput(out["text"], tuple((str(w), float(s), float(e)) for w, s, e in out["words"]))
        for stem, out in run["outputs"].items()
    }
    return Measured(EngineRun(**{**run, "outputs": outputs}), float(record["peak_rss_mb"]))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en", help="model name (tiny.en: the same weights for every engine)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of: {', '.join(ENGINES)}")
    parser.add_argument("--repeats", type=int, default=3, help="runs per engine, alternating engines")
    parser.add_argument("--files", nargs="+", help=f"16 kHz wav files with <stem>.json beside (default: {LONGFORM})")
    parser.add_argument("--batch-size", type=int, default=16, help="ours (the app's default)")
    parser.add_argument(
        "--fw-batch-size", type=int, default=8, help="faster-whisper's batched pipeline (issue #7's baseline: 8)"
    )
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1, help="faster-whisper's CPU threads")
    parser.add_argument("--json", help="also write every run and the accuracy here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main()
