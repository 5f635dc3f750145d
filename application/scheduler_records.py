"""What the server's scheduler reports: its refusals (errors a server maps to HTTP answers) and its statistics."""

from __future__ import annotations

from attrs import frozen

from onepass_whisper.domain.errors import TranscriptionError


class QueueFullError(TranscriptionError):
    """Too many requests in flight; try again after ``retry_after`` seconds."""

    def __init__(self, in_flight: int, retry_after: int) -> None:
        super().__init__(f"server busy: {in_flight} requests in flight; retry in {retry_after} s")
        self.retry_after = retry_after


class SchedulerClosedError(TranscriptionError):
    """The scheduler is shutting down and takes no new requests."""

    def __init__(self) -> None:
        super().__init__("shutting down: no new requests are taken")


@frozen
class BatchRecord:
    """One decoded batch: how many windows, from how many requests, and how long it took."""

    windows: int
    requests: int
    seconds: float


@frozen
class SchedulerStats:
    in_flight: int  # requests submitted and not yet answered
    queued_windows: int
    answered: int
    failed: int
    cancelled: int
    batches: tuple[BatchRecord, ...]  # the most recent ones, oldest first
    decoded_batches: int = 0  # since the start
    decoded_windows: int = 0
    batch_requests: int = 0  # the sum over batches of the requests each held
