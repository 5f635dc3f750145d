"""``app serve`` on the real adapters (the embedded tiny.en): the words and times a client gets are those of
``app transcribe`` for the same file. Slow: the server process loads the model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai
import pytest

from onepass_whisper.entrypoints.api import Transcriber
from tests.e2e.test_serve import START_TIMEOUT, free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.wav"

pytestmark = pytest.mark.slow


def test_served_words_and_times_equal_the_librarys() -> None:
    if not SAMPLE.is_file():
        pytest.skip(f"the bundled sample is missing: {SAMPLE.relative_to(REPO)}")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "onepass_whisper", "serve", "--port", str(port), "--model", "tiny.en"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT * 3
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        with SAMPLE.open("rb") as audio:
            served = client.audio.transcriptions.create(
                model="tiny.en", file=audio, response_format="verbose_json", timestamp_granularities=["word"]
            )
        expected = Transcriber("tiny.en").transcribe(SAMPLE)
        assert served.text == expected.text
        assert [(w.word, w.start, w.end) for w in served.words or []] == [
            (w.text.strip(), round(w.start, 3), round(w.end, 3)) for w in expected.words
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
