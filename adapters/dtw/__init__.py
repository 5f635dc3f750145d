"""Word timing from cross-attention: median filter, DTW, whisper's heuristics, audio-based boundary refinement."""

from adapters.dtw.aligner import DtwAligner, attention_matrix
from adapters.dtw.filters import median_filter
from adapters.dtw.path import dtw_path
from adapters.dtw.calibration import model_lag
from adapters.dtw.refine import find_pauses, refine_boundaries, refine_words

__all__ = [
    "DtwAligner",
    "attention_matrix",
    "dtw_path",
    "find_pauses",
    "median_filter",
    "model_lag",
    "refine_boundaries",
    "refine_words",
]
