"""The environment's settings, read once in the composition root (``entrypoints/settings.py``) and passed down."""

from __future__ import annotations

from pathlib import Path

from onepass_whisper.entrypoints.container import Container
from onepass_whisper.entrypoints.settings import Settings
from tests.fakes import FakeAligner, FakeDecoder


def test_the_defaults_where_nothing_is_set() -> None:
    settings = Settings.from_environment({"HOME": "/h"})
    assert (settings.cuda_kernels, settings.fast_blas, settings.align_processes) == (True, True, None)
    assert settings.device_alignment is None  # the adapter's choice: on where it pays


def test_each_variable_reaches_its_field() -> None:
    settings = Settings.from_environment(
        {
            "ONEPASS_CUDA_KERNELS": "0",
            "ONEPASS_BLAS": "OFF",
            "ONEPASS_CACHE_DIR": "/c",
            "ONEPASS_ALIGN_PROCESSES": "3",
            "PIP_INDEX_URL": "https://mirror.example/simple/",
            "ONEPASS_DEVICE_ALIGNMENT": "0",
        }
    )
    expected = Settings(
        cuda_kernels=False,
        fast_blas=False,
        cache_dir=Path("/c"),
        align_processes=3,
        package_index="https://mirror.example/simple",
        device_alignment=False,
    )
    assert settings == expected
    assert Settings.from_environment({"ONEPASS_DEVICE_ALIGNMENT": "1"}).device_alignment is True


def test_the_container_takes_its_settings_not_the_environment(tmp_path: Path) -> None:
    container = Container()
    with container.override_providers(
        settings=Settings(cache_dir=tmp_path, align_processes=5, package_index="file:///srv/simple"),
        decoder=FakeDecoder(),
        aligner=FakeAligner(),
    ):
        assert container.service().align_processes == 5
        source = container.model_source()
        assert source.cache_dir == tmp_path
        assert getattr(source, "package_index", None) == "file:///srv/simple"
