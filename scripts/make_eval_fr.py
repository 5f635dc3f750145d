"""The French word-timing evaluation set ``tests/data/eval/fr_librivox_mfa`` (issue 23, last item).

Real speech with forced-aligned word edges: nine sentences of the LibriVox reading of Victor Hugo's "Le Dernier
Jour d'un condamné" (chapter I) and their Montreal Forced Aligner TextGrids, as published in the workshop repository
phbuech/AtelierPhoneticDataProcessing (commit 0a0a374, ``Session1/UseCase2-French_alignments_audiobook/files``;
the later commits deleted them). Its three zips unpacked side by side are the input:

python scripts/make_eval_fr.py AUDIO_DIR TEXTGRID_DIR TRANSCRIPT_DIR tests/data/eval/fr_librivox_mfa

Writes ``<id>.wav`` (16 kHz mono PCM16, resampled by soxr from the 22,050 Hz originals; times are unchanged) and
``<id>.json`` in the format of ``../shared/data/eval`` (``app eval`` reads it): ``text`` is the transcript MFA was
given (the book's text, its punctuation kept for the WER), ``words`` the TextGrid's ``words`` tier without its empty
(silence) intervals. No time is moved: the references are MFA's.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import soundfile as sf
import soxr

RATE = 16_000
SOURCE = (
    "LibriVox 'Le Dernier Jour d'un condamné' (Victor Hugo), chapter I; audio, transcripts and TextGrids from github "
    "phbuech/AtelierPhoneticDataProcessing commit 0a0a374be6d84b61ee0abef95ed76137d8e8966a "
    "Session1/UseCase2-French_alignments_audiobook/files/UseCase2_{audio_data,transcriptions,TextGrids}.zip"
)
LICENSE = (
    "audio: public domain (LibriVox recording); text: public domain (Hugo, 1829); word times: output of the "
    "Montreal Forced Aligner as published in that repository, which states no licence (see README.md)"
)
ALIGNMENT = "forced (Montreal Forced Aligner 2.x, french_mfa acoustic model and dictionary; 10 ms grid)"
SPEAKER = "one LibriVox reader (unnamed in the source), French, read audiobook"

_INTERVAL = re.compile(r'xmin = ([0-9.]+)\s*\n\s*xmax = ([0-9.]+)\s*\n\s*text = "(.*)"')


def words_tier(textgrid: str) -> list[dict[str, object]]:
    """The non-empty intervals of the TextGrid's ``words`` tier (long text format, as MFA writes it)."""
    tiers = re.split(r"item \[\d+\]:", textgrid)[1:]
    tier = next(t for t in tiers if re.search(r'name = "words"', t))
    return [
        {"word": text, "start": float(start), "end": float(end)}
        for start, end, text in _INTERVAL.findall(tier)
        if text.strip()
    ]


def main(audio_dir: Path, textgrid_dir: Path, transcript_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for grid in sorted(textgrid_dir.glob("*.TextGrid")):
        stem = grid.stem
        samples, rate = sf.read(audio_dir / f"{stem}.wav", dtype="float32")
        if samples.ndim > 1:
            samples = samples.mean(axis=1)
        resampled = soxr.resample(samples, rate, RATE)
        sf.write(out / f"{stem}.wav", resampled, RATE, subtype="PCM_16")
        record = {
            "audio": f"{stem}.wav",
            "text": " ".join((transcript_dir / f"{stem}.lab").read_text(encoding="utf-8").split()),
            "words": words_tier(grid.read_text(encoding="utf-8")),
            "source": SOURCE,
            "license": LICENSE,
            "alignment": ALIGNMENT,
            "duration": round(len(resampled) / RATE, 4),
            "speaker": SPEAKER,
            "language": "fr",
        }
        (out / f"{stem}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python scripts/make_eval_fr.py AUDIO_DIR TEXTGRID_DIR TRANSCRIPT_DIR OUT_DIR")
    main(*(Path(a) for a in sys.argv[1:]))
