"""Whisper's text decoder stepped over a batch: one ``DecoderStep`` port, three backends.

- ``graph.GraphStep``: MLX ops, one graph a step (a GPU; on MLX's CPU backend only in the tests);
- ``host.HostStep``: numpy over the model's own weights, the CPU backend's (MLX's CPU ``exp``/``erf`` are slow);
- ``kernels.KernelStep``: MLX's CUDA backend, a one-token step as custom kernels, compiled.

``factory.Backend.choose`` picks one from the device and the settings, once per decoder; the loops
(``adapters/mlx/loop.py``) see only the port. ``common``: what the three share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:  # typing.Self from Python 3.11
    from typing_extensions import Self

Array = TypeVar("Array")


class DecoderStep(Protocol[Array]):
    """Everything one batch of sequences carries between steps; rows follow the active sequences.

    ``Array``: ``mx.array`` (the device steps) or a numpy array (the host step).
    """

    def step(self, tokens: Array, logit_positions: Sequence[int] = (-1,)) -> tuple[list[Array], Array]:
        """Feed ``tokens`` (batch × length) and advance the cache.

        Returns the logits (batch × vocab, float32) at each of ``logit_positions`` and the alignment heads'
        cross-attention QK of the last position (batch × alignment heads × audio frames): the captured rows.
        """
        ...

    def keep(self, rows: Array) -> None:
        """Compact the batch to ``rows`` (indices, ascending, of the sequences that go on)."""
        ...

    def put(self, rows: Array, fresh: Self) -> None:
        """Refill ``rows`` (indices) with ``fresh``'s sequences, one a row in order: a step of the same backend
        over their windows, prompted and never compacted. Each refilled row then goes on at its own positions
        (its learned positional embedding and its self-attention mask from its own start), so rows stepped
        together may stand at different positions; a step of several tokens needs them all at one."""
        ...
