"""What the settings say about the decoder step; free of MLX, so that the composition root can build it before
``adapters.mlx.bootstrap`` has run."""

from __future__ import annotations

from attrs import frozen


@frozen
class StepSettings:
    """From ``entrypoints.settings.Settings``, read in the composition root."""

    cuda_kernels: bool = True  # MLX's CUDA backend: a one-token step as custom kernels (``step.kernels.KernelStep``)
