"""`app eval DATASET_DIR`: transcribe an evaluation set and print WER and word-timing accuracy per source folder.

The data format is that of ``../shared/data/eval``: ``<id>.wav`` beside ``<id>.json`` holding ``text`` and
``words: [{word, start, end}]``, in one folder per source (nested folders allowed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import attrs
import typer
from rich.console import Console
from rich.progress import Progress

from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.adapters.writers import result_dict
from onepass_whisper.application.evaluation import (
    EvaluationReport,
    Hypothesis,
    Metrics,
    Reference,
    TimedWord,
    score_corpus,
)
from onepass_whisper.domain.errors import (
    InvalidOptionError,
    ModelLoadError,
    TranscriptionError,
    UnsupportedLanguageError,
)
from onepass_whisper.domain.model import TranscribeOptions, Transcript
from onepass_whisper.domain.ports import ProgressSink
from onepass_whisper.entrypoints.container import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from onepass_whisper.entrypoints.options import (
    CharTimingOption,
    LanguageOption,
    PhoneticOption,
    RefineOption,
    check_phonetic,
)

if TYPE_CHECKING:
    from onepass_whisper.application.transcription import FileResult, TranscriptionService
    from onepass_whisper.entrypoints.container import Container

stderr = Console(stderr=True, soft_wrap=True, highlight=False)  # one error a line, whatever the width


@attrs.frozen
class Utterance:
    audio: Path
    reference: Reference


def read_corpus(root: Path, limit: int | None = None, exclude: Iterable[str] = ()) -> list[Utterance]:
    """Every ``<id>.json`` with timed ``words`` under ``root`` and its audio, sorted, grouped by folder.

    ``limit``: at most that many utterances per folder (the first in name order). ``exclude``: folder names to skip.
    """
    skipped = set(exclude)
    taken: dict[str, int] = {}
    corpus = []
    for path in sorted(root.rglob("*.json")):
        group = path.parent.relative_to(root).as_posix()
        group = root.name if group == "." else group
        if group in skipped or (limit is not None and taken.get(group, 0) >= limit):
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("words"), list):
            continue  # not an utterance (a manifest, a README in JSON)
        timed = tuple(TimedWord(str(w["word"]), float(w["start"]), float(w["end"])) for w in record["words"])
        text = str(record.get("text") or " ".join(w.text for w in timed))
        audio = path.parent / str(record.get("audio") or path.with_suffix(".wav").name)
        corpus.append(Utterance(audio, Reference(path.stem, group, text, timed)))
        taken[group] = taken.get(group, 0) + 1
    return corpus


def transcribe_dataset(
    service: TranscriptionService,
    corpus: Sequence[Utterance],
    options: TranscribeOptions,
    progress: ProgressSink = lambda done, total: None,
) -> Iterator[tuple[str, FileResult]]:
    """Each utterance's reference name and result, in the order utterances finish (not the order given)."""
    names = {u.audio: u.reference.name for u in corpus}
    for result in service.transcribe_many([u.audio for u in corpus], options, progress):
        yield names[Path(result.source)], result


def format_tables(rows: Mapping[str, Metrics], label: str = "folder") -> str:
    """Two Markdown tables: WER and timing errors; shares within thresholds and collar P/R/F1."""
    first = [
        f"| {label} | utts | words | WER % | uncovered % | start MAE ms | end MAE ms | start bias ms | end bias ms "
        "| matched |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    second = [
        f"| {label} | start ≤50/100/200 ms % | end ≤50/100/200 ms % | P/R/F1 @50 ms | P/R/F1 @200 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in rows.items():
        first.append(
            f"| {name} | {m.utterances} | {m.reference_words} | {_num(100 * m.wer, 1)} "
            f"| {_num(100 * m.uncovered_speech, 2)} | {_num(m.start_mae_ms)} "
            f"| {_num(m.end_mae_ms)} | {_num(m.start_bias_ms, sign=True)} | {_num(m.end_bias_ms, sign=True)} "
            f"| {m.matched_words} |"
        )
        second.append(
            f"| {name} | {_shares(m.start_within_50, m.start_within_100, m.start_within_200)} "
            f"| {_shares(m.end_within_50, m.end_within_100, m.end_within_200)} "
            f"| {_prf(m.precision_50, m.recall_50, m.f1_50)} | {_prf(m.precision_200, m.recall_200, m.f1_200)} |"
        )
    return "\n".join(first) + "\n\n" + "\n".join(second)


LEGEND = """\
WER %: word errors (substitutions + deletions + insertions) / reference words, pooled over the utterances, after
  Whisper's English text normalisation.
uncovered %: seconds of the reference words' time that lie in no output segment / seconds of the reference words'
  time: speech the output lost, whatever its words.
matched: reference words paired with a hypothesis word of the same normalised text; the timing columns use them.
start/end MAE ms: mean absolute error of matched words' start/end times; bias ms: mean signed error (- = early).
start/end ≤50/100/200 ms %: share of matched words whose start/end is within 50, 100, 200 ms of the reference's.
P/R/F1 @50/@200 ms: a hypothesis word is right when it matches a reference word and both its start and end lie
  within 50 (200) ms of that word's; precision = right / hypothesis words, recall = right / reference words, F1
  their harmonic mean (0-1)."""


def report_record(result: EvaluationReport) -> dict[str, object]:
    """``result`` as JSON-ready data in the tables' units and rounding (NaN and infinity become null)."""
    return {
        "groups": {name: metrics_record(m) for name, m in result.groups.items()},
        "overall": metrics_record(result.overall),
    }


def metrics_record(metrics: Metrics) -> dict[str, float | int | None]:
    """The tables' numbers: WER and ≤ shares in percent, times in whole ms, P/R/F1 in [0, 1] to 2 decimals.

    Keys whose unit differs from ``Metrics``' fractions say so (``wer_percent``, ``start_within_50_ms_percent``).
    """
    m = metrics
    record: dict[str, float | int | None] = {
        "utterances": m.utterances,
        "reference_words": m.reference_words,
        "matched_words": m.matched_words,
        "wer_percent": _rounded(100 * m.wer, 1),
        "uncovered_speech_percent": _rounded(100 * m.uncovered_speech, 2),
    }
    for name in ("start_mae_ms", "end_mae_ms", "start_bias_ms", "end_bias_ms"):
        record[name] = _rounded(getattr(m, name), 0)
    for edge in ("start", "end"):
        for ms in (50, 100, 200):
            record[f"{edge}_within_{ms}_ms_percent"] = _rounded(100 * getattr(m, f"{edge}_within_{ms}"), 0)
    for ms in (50, 200):
        for name in ("precision", "recall", "f1"):
            record[f"{name}_{ms}"] = _rounded(getattr(m, f"{name}_{ms}"), 2)
    return record


def _rounded(value: float, digits: int) -> float | int | None:
    """As the tables print it; None for NaN (nothing matched) and infinity (WER with no reference words)."""
    if not math.isfinite(value):
        return None
    return round(value) if digits == 0 else round(value, digits)


DATASET_HELP = "Folder of <id>.wav + <id>.json, one folder per source (nested folders allowed)."
EXCLUDE_HELP = "Skip this folder (its path under DATASET; repeatable), e.g. longform."
HYPOTHESES_HELP = "Also write each transcript here as <id>.json, in app transcribe's JSON schema."


def eval_command(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Argument(exists=True, file_okay=False, help=DATASET_HELP)],
    model: Annotated[str, typer.Option(help="Model name, folder or hub id.")] = DEFAULT_MODEL,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows decoded together.")] = DEFAULT_BATCH_SIZE,
    refine: RefineOption = True,
    phonetic: PhoneticOption = False,
    char_timing: CharTimingOption = False,
    language: LanguageOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N utterances of each folder.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help=EXCLUDE_HELP)] = None,
    json_file: Annotated[Path | None, typer.Option("--json", dir_okay=False, help="Also write the scores.")] = None,
    hypotheses: Annotated[Path | None, typer.Option(file_okay=False, help=HYPOTHESES_HELP)] = None,
) -> None:
    """Transcribe the utterances of [bold]DATASET[/bold] and print WER and word-timing accuracy per folder.

    Timing metrics are over words matched after Whisper's English normalisation. Exit codes: 0 all utterances
    transcribed, 1 some failed (scored as empty, named on stderr), 2 usage (a language the model does not know),
    3 the model could not be loaded.
    """
    if language is not None and not language.strip():
        raise typer.BadParameter("give a language code or name, or leave the option out", param_hint="--language")
    check_phonetic(phonetic)
    container: Container = ctx.obj
    corpus = read_corpus(dataset, limit, exclude or ())
    if not corpus:
        stderr.print(f"[red]error:[/red] no utterances (<id>.json with 'words') under {dataset}")
        raise typer.Exit(code=1)
    container.config.model.from_value(model)
    container.config.batch_size.from_value(batch_size)
    container.config.refine.from_value(refine)
    container.config.phonetic.from_value(phonetic)
    container.config.char_timing.from_value(char_timing)
    transcripts: dict[str, Transcript] = {}
    failed: list[str] = []
    try:
        service = container.service()
        with Progress(console=stderr, transient=True) as bar:
            task = bar.add_task("transcribing", total=None)
            results = transcribe_dataset(
                service,
                corpus,
                TranscribeOptions(language=None if language is None else language.strip()),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            for name, outcome in results:
                if outcome.transcript is not None:
                    transcripts[name] = outcome.transcript
                else:
                    failed.append(name)
                    stderr.print(f"[red]error:[/red] {outcome.error}")
    except (InvalidOptionError, UnsupportedLanguageError) as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    except TranscriptionError as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=3 if isinstance(exc, ModelLoadError) else 1) from exc

    hypotheses_by_name = {name: Hypothesis.from_transcript(t) for name, t in transcripts.items()}
    result = score_corpus([u.reference for u in corpus], hypotheses_by_name, WhisperTextMetrics())
    typer.echo(format_tables({**result.groups, "overall": result.overall}))
    typer.echo("\n" + LEGEND)
    if json_file is not None:
        record: dict[str, object] = {"dataset": str(dataset), "model": model, "batch_size": batch_size}
        record["language"] = language
        record |= {
            "refine": refine,
            "phonetic": phonetic,
            "char_timing": char_timing,
            "limit": limit,
            "failed": failed,
            **report_record(result),
        }
        json_file.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if hypotheses is not None:
        hypotheses.mkdir(parents=True, exist_ok=True)
        for name, transcript in transcripts.items():
            (hypotheses / f"{name}.json").write_text(json.dumps(result_dict(transcript)), encoding="utf-8")
    if failed:
        raise typer.Exit(code=1)


def _num(value: float, digits: int = 0, sign: bool = False) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _shares(*values: float) -> str:
    return "/".join(_num(100 * v) for v in values)


def _prf(*values: float) -> str:
    return "/".join(_num(v, 2) for v in values)
