"""Compare two runs' JSON transcripts of the same inputs, word by word: what a change drops or adds.

    app transcribe ../shared/data/eval -o /tmp/before -f json      # on the old code
    app transcribe ../shared/data/eval -o /tmp/after -f json       # on the new code
    python scripts/diff_words.py /tmp/before /tmp/after

Words are compared as the tokenizer spells them, in order (difflib), per file; a file present in one folder only is
named. Prints one line per file that differs, then the totals: files emptied (words before, none after), words
dropped and added. Exit status 1 when any word was dropped (so that a check can fail on it), else 0.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path


def words(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for segment in document["segments"]:
        if "words" in segment:
            out.extend(word["word"].strip() for word in segment["words"])
        else:
            out.extend(segment["text"].split())
    return out


def main(before: Path, after: Path) -> int:
    names = sorted(
        {p.relative_to(before) for p in before.rglob("*.json")} | {p.relative_to(after) for p in after.rglob("*.json")}
    )
    files = emptied = dropped = added = total = 0
    for name in names:
        old_path, new_path = before / name, after / name
        if not old_path.exists() or not new_path.exists():
            print(f"{name}: only in {before if old_path.exists() else after}")
            continue
        old, new = words(old_path), words(new_path)
        files += 1
        total += len(old)
        lost = gained = 0
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
            if tag in ("delete", "replace"):
                lost += i2 - i1
            if tag in ("insert", "replace"):
                gained += j2 - j1
        if lost or gained:
            print(f"{name}: -{lost} +{gained}  before: {' '.join(old)[:80]!r}  after: {' '.join(new)[:80]!r}")
        emptied += bool(old) and not new
        dropped += lost
        added += gained
    print(f"{files} files, {total} words before: {emptied} files emptied, {dropped} words dropped, {added} added")
    return 1 if dropped else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} BEFORE_DIR AFTER_DIR")
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
