"""Which outputs ``app transcribe`` writes for each input: all formats with ``--overwrite``, else the missing ones;
none when the existing outputs were made with other settings (they are kept, and the input counts as failed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from attrs import frozen
from rich.console import Console

from onepass_whisper.adapters.writers import TranscriptFiles
from onepass_whisper.application.settings import OPTIONS_FIELD, settings_differences
from onepass_whisper.entrypoints.console import error, note
from onepass_whisper.entrypoints.inputs import Job


@frozen
class OutputPlan:
    """A job with what to write: all formats, or (without --overwrite) the missing ones."""

    job: Job
    base: Path  # output path without extension
    formats: tuple[str, ...]
    existing: tuple[Path, ...]

    @classmethod
    def of(cls, job: Job, output_dir: Path, files: TranscriptFiles, overwrite: bool) -> OutputPlan:
        base = output_dir / job.name
        if job.name.is_absolute() or ".." in job.name.parts or base.name in ("", ".", ".."):
            raise ValueError(f"output name {job.name} would leave the output folder")  # a bug in find_inputs
        existing = () if overwrite else tuple(p for p in files.targets(base) if p.exists())
        formats = tuple(f for f, p in zip(files.formats, files.targets(base)) if p not in existing)
        return cls(job, base, formats, existing)

    def settings_differences(self, model: str, files: TranscriptFiles) -> list[str]:
        """How the settings recorded in the existing JSON output differ from this run's (none when nothing is
        kept, or no readable JSON output of ours records them)."""
        if not self.existing or files.options is None:
            return []
        record = self.base.with_name(f"{self.base.name}.json")
        try:
            document = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(document, dict):
            return []
        return settings_differences(document.get("model"), document.get(OPTIONS_FIELD), model, files.options)


@frozen
class OutputPlans:
    """What a run writes (``todo``), and how many inputs it leaves: done already, or kept with other settings."""

    todo: tuple[OutputPlan, ...]
    skipped: int  # every output exists
    stale: int  # outputs made with other settings: kept as they are, and counted as failed


def plan_outputs(
    jobs: Sequence[Job],
    output_dir: Path,
    files: TranscriptFiles,
    *,
    model: str,
    overwrite: bool,
    stderr: Console,
    verbose: bool | None,
) -> OutputPlans:
    """Plan each job's outputs, naming on stderr the inputs left as they are (the notes not with ``--quiet``)."""
    todo: list[OutputPlan] = []
    skipped = stale = 0
    for job in jobs:
        plan = OutputPlan.of(job, output_dir, files, overwrite)
        differences = plan.settings_differences(model, files)
        if differences:
            stale += 1
            error(
                stderr,
                f"{job.source}: its outputs in {output_dir} were made with other settings: "
                f"{'; '.join(differences)}; kept as they are (use --overwrite to redo them)",
            )
            continue
        if not plan.formats:
            skipped += 1
            if verbose is not False:
                note(stderr, f"skipped {job.source}: its outputs exist (use --overwrite to replace them)")
            continue
        if plan.existing and verbose is not False:
            shown = ", ".join(str(p) for p in plan.existing)
            note(stderr, f"{job.source}: keeping existing {shown} (use --overwrite to replace)")
        todo.append(plan)
    return OutputPlans(tuple(todo), skipped=skipped, stale=stale)
