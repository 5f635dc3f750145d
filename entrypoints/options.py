"""Options that several commands share, declared once so that their names, checks and help stay alike."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from onepass_whisper.entrypoints.container import PHONETIC_MISSING, phonetic_available


class OutputFormat(str, Enum):
    TXT = "txt"
    SRT = "srt"
    VTT = "vtt"
    TSV = "tsv"
    JSON = "json"
    ALL = "all"


ModelOption = Annotated[
    str,
    typer.Option(
        metavar="NAME",
        help="A built-in model (see [b]app models[/b]), a local model folder (mlx-whisper or CTranslate2 layout) "
        "or a Hugging Face repository id.",
        rich_help_panel="Model",
    ),
]
BatchSizeOption = Annotated[
    int,
    typer.Option(min=1, metavar="N", help="Windows (30 s each) decoded together.", rich_help_panel="Model"),
]
RefineOption = Annotated[
    bool,
    typer.Option(
        "--refine/--no-refine",
        help="Refine word times: take the model's measured lag off DTW's times and move word edges onto the pauses "
        "and energy dips of the audio, and onto the encoder's word edges where the model has a probe (base, "
        "tiny.en). --no-refine gives whisper's plain DTW times.",
        rich_help_panel="Decoding",
    ),
]
PhoneticOption = Annotated[
    bool,
    typer.Option(
        "--phonetic/--no-phonetic",
        help="Also force-align English words with pocketsphinx's acoustic model (the 'phonetic' extra) and take "
        "its word edges where they lie within 0.3 s of the attention's: ~25 ms typical error instead of ~50, for "
        "~0.02 s of CPU time per second of audio. Other languages keep the attention's times.",
        rich_help_panel="Decoding",
    ),
]
CharTimingOption = Annotated[
    bool,
    typer.Option(
        "--char-timing/--no-char-timing",
        help="Time word starts from a second decoder pass that spells the decoded words one character a token "
        "(any language, the same words): closer word edges with base (TIMIT: 28 / 32 ms mean error instead of "
        "37 / 41), for a CPU run ~1.25x as long on speech-dense audio (docs/performance.md #97). With tiny.en "
        "timing gets worse: its attention does not follow characters.",
        rich_help_panel="Decoding",
    ),
]
LanguageOption = Annotated[
    str | None,
    typer.Option(
        metavar="LANG",
        help="Spoken language, a code or name ('en', 'German'); detected per window when left out.",
        show_default=False,
        rich_help_panel="Decoding",
    ),
]
OutputFormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output-format",
        "-f",
        metavar="FORMAT",
        help="[b]txt[/b], [b]srt[/b], [b]vtt[/b], [b]tsv[/b], [b]json[/b] or [b]all[/b] of them.",
        rich_help_panel="Output",
    ),
]


def check_phonetic(phonetic: bool) -> None:
    """``--phonetic`` needs pocketsphinx: a usage error (exit 2) naming the extra to install, before any work."""
    if phonetic and not phonetic_available():
        raise typer.BadParameter(PHONETIC_MISSING, param_hint="--phonetic")
