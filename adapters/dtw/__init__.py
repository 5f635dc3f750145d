"""Word timing from cross-attention: median filter, DTW, whisper's heuristics, audio-based boundary refinement."""

from onepass_whisper.adapters.dtw.aligner import DtwAligner, attention_matrix, token_frames
from onepass_whisper.adapters.dtw.filters import median_filter
from onepass_whisper.adapters.dtw.lag import LagAligner, estimate_lag
from onepass_whisper.adapters.dtw.path import dtw_path
from onepass_whisper.adapters.dtw.refine import find_pauses, refine_boundaries, refine_words

__all__ = [
    "DtwAligner",
    "LagAligner",
    "attention_matrix",
    "dtw_path",
    "estimate_lag",
    "find_pauses",
    "median_filter",
    "refine_boundaries",
    "refine_words",
    "token_frames",
]
