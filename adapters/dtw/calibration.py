"""How late each built-in model's alignment heads attend, on average: the lag ``DtwAligner`` takes off DTW's times.

Whisper's alignment heads do not attend exactly where a word sounds: tiny.en's DTW boundaries come out ~90 ms late,
base's ~80 ms early, on starts and ends alike, in every folder of the evaluation data (``docs/alignment.md``). That
is a property of the model's heads, not of the audio, so it is measured once per model: the median signed error of
DTW boundaries (refinement off) between words that meet without a pause in a reference with word times.

Measured with ``python -m benchmarks.calibrate_lag ../shared/data/eval/ljspeech_mfa --model NAME`` (34 utterances
of one audiobook reader, forced alignments; about 900 word edges a model), 2026-11-26. The accuracy goal is judged on
timit_dev, which this calibration never sees; there the same statistic is +90 ms (tiny.en) and -54 ms (base).
A model not in the table gets no correction.
"""

from __future__ import annotations

from collections.abc import Mapping

MODEL_LAG_SECONDS: Mapping[str, float] = {
    "tiny.en": 0.09,  # median +90 ms (mean +91) over 906 word edges
    "base": -0.08,  # median -80 ms (mean -94) over 912 word edges
}


def model_lag(name: str) -> float:
    """The calibrated lag of the built-in model ``name`` in seconds (positive: late); 0 for any other model."""
    return MODEL_LAG_SECONDS.get(name, 0.0)
