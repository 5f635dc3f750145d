"""Proof of "no behaviour change": transcribe a folder to JSON, then diff the words and times of two such runs.

    python scripts/diff_outputs.py run ../shared/data/eval /tmp/before      # on the old commit
    python scripts/diff_outputs.py run ../shared/data/eval /tmp/after       # on the new one
    python scripts/diff_outputs.py diff /tmp/before /tmp/after              # exit 0: same words and times

A refactor must not move a single word or time, so the comparison is exact (times as written, to the
millisecond); every difference is listed, one line each, and the exit code is 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

Word = tuple[str, float, float]


def _run(source: Path, out: Path, model: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "onepass_whisper",
        "transcribe",
        str(source),
        "-o",
        str(out),
        "-f",
        "json",
        "--model",
        model,
        "--quiet",
        "--overwrite",
    ]
    return subprocess.call(command)


def _words(path: Path) -> tuple[str, list[Word]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    words = [(w["word"], w["start"], w["end"]) for s in data["segments"] for w in s.get("words", [])]
    return data["text"], words


def _diff(before: Path, after: Path) -> int:
    old = {p.relative_to(before) for p in before.rglob("*.json")}
    new = {p.relative_to(after) for p in after.rglob("*.json")}
    problems = [f"only in {before}: {p}" for p in sorted(old - new)]
    problems += [f"only in {after}: {p}" for p in sorted(new - old)]
    words = 0
    for name in sorted(old & new):
        (text_a, a), (text_b, b) = _words(before / name), _words(after / name)
        words += len(a)
        if text_a != text_b:
            problems.append(f"{name}: text differs")
        if len(a) != len(b):
            problems.append(f"{name}: {len(a)} words before, {len(b)} after")
        problems += [f"{name}: word {i}: {x} -> {y}" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    for line in problems:
        print(line)
    print(f"{len(old & new)} files, {words} words compared: {len(problems)} differences", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="transcribe SOURCE to JSON files in OUT")
    run.add_argument("source", type=Path)
    run.add_argument("out", type=Path)
    run.add_argument("--model", default="tiny.en")
    diff = commands.add_parser("diff", help="compare the words and times of two output folders")
    diff.add_argument("before", type=Path)
    diff.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        return _run(args.source, args.out, args.model)
    return _diff(args.before, args.after)


if __name__ == "__main__":
    raise SystemExit(main())
