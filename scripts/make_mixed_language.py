"""Synthetic mixed-language speech for the undecoded-tail rule (issue 26 item 1; docs/reliability.md, "Speech after
a language change"): one sentence, 2 s of silence, a sentence in another language, spoken by espeak-ng.

python scripts/make_mixed_language.py OUT_DIR [NAME...]     # every file of FILES, or the ones named
python scripts/make_mixed_language.py tests/data/mixed_language en_fr en_es en_en      # the committed ones

Writes 16 kHz mono 16-bit WAVs and ``spans.json`` (each file's sentences: language, text, start and end in seconds,
the voiced span of the speech as espeak-ng made it), the reference of the uncovered-speech measurement. The
``en_music``, ``en_white``, ``en_pink`` and ``en_room`` files end in 8 s of non-speech instead of a second sentence:
what follows a sentence must not be decoded into words.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 16_000
LEAD, GAP, TRAIL = 0.3, 2.0, 0.5  # seconds of silence before, between and after the sentences

SENTENCES = {  # two clauses each: with one short sentence after the change, base goes on in the first language
    "en": "The weather was cold this morning, so we stayed inside and read our books by the fire.",
    "en2": "After lunch, my sister called to tell me about her new job in the city. She starts next week and she is "
    "very happy.",
    "fr": "Le matin, nous sommes allés au marché pour acheter du pain frais et des fruits. Ensuite nous avons pris un "
    "café sur la place.",
    "de": "Am Morgen sind wir zum Markt gegangen, um frisches Brot und Obst zu kaufen. Danach haben wir auf dem Platz "
    "einen Kaffee getrunken.",
    "es": "Por la mañana fuimos al mercado para comprar pan fresco y fruta. Después tomamos un café en la plaza del "
    "pueblo.",
}
VOICES = {"en": "en-us", "en2": "en-us", "fr": "fr", "de": "de", "es": "es"}

# name: the sentences in order
FILES = {
    "en_fr": ("en", "fr"),
    "en_es": ("en", "es"),
    "en_de": ("en", "de"),
    "fr_en": ("fr", "en"),
    "de_en": ("de", "en"),
    "en_en": ("en", "en2"),  # the control: no language change
    "en_fr_en_es_en": ("en", "fr", "en2", "es", "en"),  # over 30 s: two windows
    # speech, then what must not be decoded into words: music and noise as loud as the speech, room noise under it
    "en_music": ("en", "music"),
    "en_white": ("en", "white"),
    "en_pink": ("en", "pink"),
    "en_room": ("en", "room"),
}
COMMITTED = ("en_fr", "en_es", "en_en")  # tests/data/mixed_language: the rest would pass the size a test may add


def speak(key: str, folder: Path) -> np.ndarray:
    """``SENTENCES[key]`` spoken by espeak-ng, at 16 kHz, its leading and trailing silence cut off."""
    wav = folder / f"{key}.wav"
    subprocess.run(["espeak-ng", "-v", VOICES[key], "-w", str(wav), SENTENCES[key]], check=True)
    samples, rate = sf.read(wav, dtype="float32")
    samples = soxr.resample(samples, rate, RATE)
    voiced = np.flatnonzero(np.abs(samples) > 1e-3)
    return samples[voiced[0] : voiced[-1] + 1]


def non_speech(key: str, level: float) -> np.ndarray:
    """8 s of music (a chord progression, as ``scripts/non_speech_inputs.py``), white or pink noise at the speech's
    RMS ``level``, or room noise (pink) 40 dB under it."""
    rng = np.random.default_rng(0)
    t = np.arange(8 * RATE) / RATE
    if key == "music":
        chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
        part = t[: 2 * RATE]
        x = np.concatenate(
            [sum(np.sin(2 * np.pi * f * h * part) / h for f in c for h in (1, 2, 3)) * np.exp(-part) for c in chords]
        )
    elif key == "white":
        x = rng.standard_normal(len(t))
    else:
        spectrum = np.fft.rfft(rng.standard_normal(len(t)))
        x = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), len(t))
    gain = level * (10 ** (-40 / 20) if key == "room" else 1.0)
    return (x / np.sqrt(np.mean(x**2)) * gain).astype(np.float32)


def main(out: Path, names: Sequence[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spans: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        spoken = {key: speak(key, Path(tmp)) for key in SENTENCES}
    level = float(np.sqrt(np.mean(spoken["en"] ** 2)))
    spoken |= {key: non_speech(key, level) for key in ("music", "white", "pink", "room")}
    for name in names:
        keys = FILES[name]
        parts, sentences = [np.zeros(round(LEAD * RATE), np.float32)], []
        at = len(parts[0])
        for number, key in enumerate(keys):
            if number:
                parts.append(np.zeros(round(GAP * RATE), np.float32))
                at += len(parts[-1])
            parts.append(spoken[key])
            if key in SENTENCES:
                span = {"start": at / RATE, "end": (at + len(spoken[key])) / RATE}
                sentences.append({"language": key[:2], "text": SENTENCES[key], **span})
            at += len(spoken[key])
        parts.append(np.zeros(round(TRAIL * RATE), np.float32))
        sf.write(out / f"{name}.wav", np.concatenate(parts), RATE, subtype="PCM_16")
        spans[name] = sentences
    (out / "spans.json").write_text(json.dumps(spans, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or list(FILES))
