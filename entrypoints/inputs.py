"""Which files ``app transcribe`` reads, and the name each one's outputs get."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from attrs import frozen

from onepass_whisper.domain.ports import STDIN

AUDIO_SUFFIXES: Final = frozenset(
    ".wav .flac .mp3 .ogg .oga .opus .m4a .aac .wma .aif .aiff .aifc .caf .au .w64 .rf64 .webm .mka "
    ".mp4 .m4v .mov .mkv .avi .3gp".split()
)  # audio that libsndfile or FFmpeg reads, and the videos whose first audio stream FFmpeg decodes
STDIN_STEM: Final = Path("stdin")  # the output name of standard input (``app transcribe -``)


@frozen
class Job:
    """One input file and its output name: the path without extension, relative to the output folder."""

    source: Path
    name: Path


@frozen
class Inputs:
    """What ``find_inputs`` found: the jobs, the folders without audio and the paths that do not exist."""

    jobs: tuple[Job, ...]
    empty_folders: tuple[Path, ...]
    missing: tuple[Path, ...]


def find_inputs(paths: Iterable[Path]) -> Inputs:
    """The audio files of ``paths`` (files as given, folders searched recursively), the folders with none and the
    paths that do not exist (reported by the caller, which goes on with the others).

    ``-`` (``STDIN``) is standard input, named ``stdin``; a file called ``-`` is given by another path to it
    (``./-`` is ``-`` to ``pathlib``: its full path). Output names are the input's stem, under the sub-folders of the folder it was found in. Where inputs would
    share a name (``a.wav`` and ``a.mp3``, or two folders with the same layout), each of them keeps its extension
    (``a.wav``, ``a.mp3``), and still equal names get ``-2``, ``-3``... in input order. Hidden files and folders
    are ignored; a file reached twice is transcribed once.
    """
    found: list[tuple[Path, Path]] = []  # (source, name)
    empty: list[Path] = []
    missing: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path == STDIN:  # read once, however often it is given
            if STDIN not in seen:
                seen.add(STDIN)
                found.append((STDIN, STDIN_STEM))
            continue
        if not path.exists() and not path.is_symlink():  # a dangling link is a file that cannot be read
            missing.append(path)
            continue
        if path.is_dir():
            audio = [(file, file.relative_to(path)) for file in _audio_files(path)]
            if not audio:
                empty.append(path)
        else:
            audio = [(path, Path(path.name))]
        for source, relative in audio:
            key = source.resolve()
            if key not in seen:
                seen.add(key)
                found.append((source, relative))
    return Inputs(tuple(_unique_names(found)), tuple(empty), tuple(missing))


def _audio_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        files.extend(
            Path(root) / name
            for name in sorted(names)
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES
        )
    return files


def _stem(relative: Path) -> Path:
    """``relative`` without its extension, unless that leaves a name that is no file name: ``..wav`` would give
    ``.``, and ``out/.`` + ``.txt`` is ``out.txt``, outside the output folder."""
    stem = relative.with_suffix("") if relative.suffix else relative
    return relative if stem.name in ("", ".", "..") else stem


def _unique_names(found: Sequence[tuple[Path, Path]]) -> list[Job]:
    def key(name: Path) -> str:
        return name.as_posix().casefold()  # case-insensitive file systems collide on case alone

    stems = [_stem(relative) for _, relative in found]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[key(stem)] = counts.get(key(stem), 0) + 1
    names = [stem if counts[key(stem)] == 1 else relative for stem, (_, relative) in zip(stems, found)]
    taken: dict[str, int] = {}
    jobs = []
    for name, (source, _) in zip(names, found):
        number = taken.get(key(name), 0) + 1
        taken[key(name)] = number
        jobs.append(Job(source, name if number == 1 else name.with_name(f"{name.name}-{number}")))
    return jobs
