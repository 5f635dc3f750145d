"""Synthetic non-speech inputs for measuring the no-speech rule (docs/reliability.md, "Non-speech").

python scripts/non_speech_inputs.py OUT_DIR && app transcribe OUT_DIR -o OUT -f json --batch-size 1
"""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
sr = 16000
rng = np.random.default_rng(0)


def t(s):
    return np.arange(int(s * sr)) / sr


def pink(n):
    w = rng.standard_normal(n)
    f = np.fft.rfft(w)
    k = np.arange(len(f))
    k[0] = 1
    return np.fft.irfft(f / np.sqrt(k), n)


def norm(x, dbfs):
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


files = {
    "silence_10s": np.zeros(10 * sr),
    "silence_0.2s": np.zeros(int(0.2 * sr)),
    "silence_45s": np.zeros(45 * sr),
}
for f0 in (50, 60):
    x = sum(np.sin(2 * np.pi * f0 * k * t(10)) / k for k in (1, 2, 3, 5))
    for db in (-40, -20):
        files[f"hum{f0}_{-db}dB"] = norm(x, db)
for db in (-50, -30, -15):
    files[f"white_{-db}dB"] = norm(rng.standard_normal(10 * sr), db)
    files[f"pink_{-db}dB"] = norm(pink(10 * sr), db)
# music-like: a chord progression of harmonic tones with an envelope, and a drum-like click track
chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
music = np.concatenate(
    [
        sum(np.sin(2 * np.pi * f * h * t(2.5)) / h for f in c for h in (1, 2, 3)) * np.exp(-t(2.5) * 0.8)
        for c in chords * 2
    ]
)
for db in (-30, -15):
    files[f"music_{-db}dB"] = norm(music, db)
clicks = np.zeros(10 * sr)
clicks[:: sr // 2] = 1.0
files["clicks_-20dB"] = norm(
    np.convolve(clicks, np.exp(-np.arange(400) / 50.0))[: 10 * sr] + 0.01 * rng.standard_normal(10 * sr), -20
)
for name, x in files.items():
    sf.write(out / f"{name}.wav", np.asarray(x, np.float32), sr, subtype="PCM_16")
# truncated WAV: the first 300 bytes of a real file
real = (Path(__file__).resolve().parents[1] / "samples" / "sample.wav").read_bytes()
(out / "truncated_300B.wav").write_bytes(real[:300])
