"""What the settings say about the decoder step; free of MLX, so that the composition root can build it before
``adapters.mlx.bootstrap`` has run."""

from __future__ import annotations

from attrs import frozen


@frozen
class StepSettings:
    """From ``entrypoints.settings.Settings``, read in the composition root."""

    cuda_kernels: bool = True  # MLX's CUDA backend: a one-token step as custom kernels (``step.kernels.KernelStep``)
    # word timing's attention reduction and DTW for a whole batch where the rows were captured (``alignment.py``):
    # None where it pays (MLX's CUDA backend), True or False to force it
    device_alignment: bool | None = None
    median_width: int = 7  # the alignment's median filter, as the host aligner's (``DtwAligner.median_width``)
