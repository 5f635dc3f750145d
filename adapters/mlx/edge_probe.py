"""Word edges read off the encoder's output: a linear probe per model, trained offline on forced alignments.

Each encoder frame (20 ms) gets a score: is a word's start or end in it? The probe is a logistic regression over
the frame's output vector and the difference of its two neighbours' (``benchmarks/encoder_boundaries.py export``
trains it on ljspeech_mfa's MFA word edges and writes ``edge_probes/<model>.json``). Both terms are linear in the
encoder's output, so the device computes two numbers a frame (``features @ weights``) and only those cross to the
host, where the neighbours' difference and the bias are added: no second pass, no extra encoder work.

A probe belongs to the weights it was trained on, not to a model's name: each file holds a fingerprint of the
encoder's final layer norm (``fingerprint``), and a model whose fingerprint no file holds gets no probe: its word
timing is the refinement's without this step, as before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from attrs import field, frozen
from mlx_whisper.whisper import Whisper
from numpy.typing import NDArray

PROBES = Path(__file__).with_name("edge_probes")


def fingerprint(model: Whisper) -> str:
    """What identifies the encoder's weights: a hash of its final layer norm as float16 (the same whichever dtype the
    model was loaded in, as checkpoints hold float16 or float32 values that float16 rounds alike)."""
    digest = hashlib.sha256()
    for array in (model.encoder.ln_post.weight, model.encoder.ln_post.bias):
        digest.update(np.array(array.astype(mx.float32)).astype(np.float16).tobytes())
    return digest.hexdigest()[:16]


def _matrix(values: object) -> NDArray[np.float32]:
    return np.asarray(values, dtype=np.float32)


@frozen(eq=False)  # an array field: compared by identity
class EdgeProbe:
    """Frame score = ``frame @ weights[:, 0] + (next frame - previous frame) @ weights[:, 1] + bias`` (a logit)."""

    weights: NDArray[np.float32] = field(converter=_matrix)  # state × 2
    bias: float
    fingerprint: str = ""
    # the weights on the device, per dtype: made once, not uploaded again for every encoder batch
    _on_device: dict[mx.Dtype, mx.array] = field(factory=dict, init=False, repr=False)

    @classmethod
    def load(cls, path: Path) -> EdgeProbe:
        data = json.loads(path.read_text())
        return cls(np.array(data["weights"], np.float32).T, float(data["bias"]), str(data["fingerprint"]))

    @classmethod
    def for_model(cls, model: Whisper, folder: Path = PROBES) -> EdgeProbe | None:
        """The probe trained on ``model``'s encoder weights, or None where ``folder`` holds none."""
        wanted = fingerprint(model)
        for path in sorted(folder.glob("*.json")):
            probe = cls.load(path)
            if probe.fingerprint == wanted and probe.weights.shape[0] == model.dims.n_audio_state:
                return probe
        return None

    def project(self, features: mx.array) -> NDArray[np.float32]:
        """windows × frames × state encoder output -> windows × frames × 2, on the features' device."""
        return np.array(self.projection(features))

    def projection(self, features: mx.array) -> mx.array:
        """``project``'s product on the device, float32, not evaluated (on the current stream)."""
        if features.dtype not in self._on_device:
            self._on_device[features.dtype] = mx.array(self.weights).astype(features.dtype)
        return (features @ self._on_device[features.dtype]).astype(mx.float32)

    def logits(self, projected: NDArray[np.float32], frames: int) -> NDArray[np.float32]:
        """One window's ``project`` rows -> its ``frames`` real frames' logits (the neighbours of the first and last
        frame are the frames themselves, as in training)."""
        own, change = projected[:frames, 0], projected[:frames, 1]
        if frames == 0:
            return np.zeros(0, np.float32)
        after = np.concatenate((change[1:], change[-1:]))
        before = np.concatenate((change[:1], change[:-1]))
        return np.asarray(own + after - before + self.bias, dtype=np.float32)
