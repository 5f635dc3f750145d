"""A bounded soak of ``app serve`` on loopback (fake model, real audio reading and HTTP): many requests from
concurrent clients, none lost or mixed up, and the server's memory flat once warm."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_serve import Server, wav_bytes

CLIENTS = 8
REQUESTS = 240  # in all; bounded in count, and in time below
WARM_UP = 60  # requests before the first memory reading
TIME_LIMIT = 120.0  # seconds
RSS_GROWTH_LIMIT_MB = 16.0  # heuristic: a leak of a transcript or window per request would pass this over 180


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server("--batch-size", "8", "--gather-ms", "10")
    yield running
    running.stop()


def test_soak_nothing_lost_and_memory_flat(server: Server) -> None:
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to read the server's memory")
    uploads = {label: wav_bytes(1.0 + label % 9, label) for label in range(100, 100 + 32)}
    wrong: list[str] = []
    counter = iter(range(REQUESTS))
    lock = threading.Lock()
    readings: list[float] = []
    deadline = time.monotonic() + TIME_LIMIT

    def client() -> None:
        openai_client = server.client(retries=0)
        while time.monotonic() < deadline:
            with lock:
                number = next(counter, None)
                if number == WARM_UP:
                    readings.append(rss_mb(server.process.pid))
            if number is None:
                return
            label = 100 + number % 32
            text = openai_client.audio.transcriptions.create(model="whisper-1", file=("a.wav", uploads[label])).text
            if text != f"w{label}":
                with lock:
                    wrong.append(f"request {number}: {text!r} for w{label}")

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIME_LIMIT + 30)
    health = server.health()
    assert wrong == []
    assert health["answered"] == REQUESTS, "requests lost or the time limit hit"
    assert health["failed"] == health["cancelled"] == health["in_flight"] == health["queued_windows"] == 0
    growth = rss_mb(server.process.pid) - readings[0]
    assert growth < RSS_GROWTH_LIMIT_MB, f"server memory grew {growth:.1f} MB over {REQUESTS - WARM_UP} requests"
