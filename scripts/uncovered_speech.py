"""The share of known speech that falls in no output segment, per file and overall (docs/reliability.md, "Speech
after a language change"): the reference is ``spans.json`` of ``scripts/make_mixed_language.py`` (each sentence's
span), the output ``app transcribe -f json``'s files.

python scripts/uncovered_speech.py SPANS_JSON OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from onepass_whisper.application.evaluation import uncovered_seconds


def main(spans_file: Path, outputs: Path) -> None:
    spans = json.loads(spans_file.read_text(encoding="utf-8"))
    total = lost = 0.0
    for name, sentences in sorted(spans.items()):
        document = json.loads((outputs / f"{name}.json").read_text(encoding="utf-8"))
        covered = [(s["start"], s["end"]) for s in document["segments"]]
        speech, uncovered = uncovered_seconds([(s["start"], s["end"]) for s in sentences], covered)
        total, lost = total + speech, lost + uncovered
        print(f"{name:16} {100 * uncovered / speech:6.1f} %  ({uncovered:.2f} of {speech:.2f} s)")
    print(f"{'overall':16} {100 * lost / total:6.1f} %  ({lost:.2f} of {total:.2f} s)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
