"""A labelled corpus through a container's service, scored as ``app eval`` scores it (the real-model timing tests)."""

from __future__ import annotations

from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import Hypothesis, Metrics, score_corpus
from onepass_whisper.domain.model import TranscribeOptions
from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.eval_command import Utterance


def scored(container: Container, utterances: list[Utterance]) -> Metrics:
    """Every utterance transcribed (English) in one run of ``container``'s service; all must succeed."""
    names = {str(u.audio): u.reference.name for u in utterances}
    results = container.service().transcribe_many([u.audio for u in utterances], TranscribeOptions(language="en"))
    hypotheses = {
        names[str(r.source)]: Hypothesis.from_transcript(r.transcript) for r in results if r.transcript is not None
    }
    assert len(hypotheses) == len(utterances)
    return score_corpus([u.reference for u in utterances], hypotheses, WhisperTextMetrics()).overall
