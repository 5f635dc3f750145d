"""Word edges from a forced alignment with pocketsphinx's acoustic model (English; the ``phonetic`` extra)."""

from onepass_whisper.adapters.phonetic.aligner import (
    PhoneticAligner,
    PhoneticLagAligner,
    dictionary_words,
    forced_alignment,
    pronounce,
)


def is_available() -> bool:
    """Whether pocketsphinx is installed (``pip install 'pocketsphinx>=5.0.4,<6'``)."""
    from importlib.util import find_spec

    return find_spec("pocketsphinx") is not None


__all__ = ["PhoneticAligner", "PhoneticLagAligner", "dictionary_words", "forced_alignment", "is_available", "pronounce"]
