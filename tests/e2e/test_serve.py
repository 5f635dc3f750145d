"""``app serve`` as a real process on a loopback port (``tests/e2e/serve_app.py``: real audio reading and uvicorn, a
fake model), called with the official ``openai`` client as a user's code would, and with plain HTTP for faults."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import pytest

from onepass_whisper.domain.audio import SAMPLE_RATE

START_TIMEOUT = 60.0  # seconds for the process to import, load the (fake) model and listen


def wav_bytes(seconds: float, label: int) -> bytes:
    """A 16-bit WAV tone of amplitude ``label`` thousandths: the fake model says ``w<label>`` in each window."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    samples = np.round(label / 1000 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(SAMPLE_RATE)
        file.writeframes(samples.tobytes())
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """``app serve`` in a child process, on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.serve_app", "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.process.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx2.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("server did not start")

    def client(self, api_key: str = "none", retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=retries, timeout=30.0)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx2.get(f"{self.url}/health", timeout=5.0).json()
        return body

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def hold_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "hold"


@pytest.fixture(scope="module")
def server(hold_file: Path) -> Iterator[Server]:
    running = Server("--batch-size", "8", "--gather-ms", "20", env={"SERVE_APP_HOLD": str(hold_file)})
    yield running
    running.stop()


def post(url: str, data: bytes, name: str = "a.wav", timeout: float = 30.0, **fields: str) -> httpx2.Response:
    return httpx2.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": (name, data, "audio/wav")},
        data={"model": "whisper-1", **fields},
        timeout=timeout,
    )


def test_json_and_text_as_the_openai_client_reads_them(server: Server) -> None:
    client = server.client()
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(3.0, 123)))
    assert result.text == "w123"
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav_bytes(3.0, 124)), response_format="text"
    )
    assert str(text).strip() == "w124"


def test_verbose_json_has_words_and_segments_in_openais_shape(server: Server) -> None:
    result = server.client().audio.transcriptions.create(
        model="whisper-1",
        file=("long.wav", wav_bytes(45.0, 321)),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    assert result.language == "english"
    assert result.duration == pytest.approx(45.0)
    assert [w.word for w in result.words or []] == ["w321", "w321"]  # one word a window, two windows
    assert result.words is not None and result.words[1].start >= result.words[0].end
    assert result.segments is not None and [s.id for s in result.segments] == [0, 1]
    assert result.segments[1].end == pytest.approx(45.0)


def test_srt_and_vtt_are_the_projects_subtitles(server: Server) -> None:
    client = server.client()
    srt = str(
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(2.0, 50)), response_format="srt")
    )
    vtt = str(
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(2.0, 50)), response_format="vtt")
    )
    assert srt.startswith("1\n00:00:00,000 --> ") and "w50" in srt
    assert vtt.startswith("WEBVTT") and "w50" in vtt


def test_concurrent_requests_share_batches_and_get_only_their_own_words(server: Server, hold_file: Path) -> None:
    hold_file.touch()
    results: dict[int, str] = {}

    def ask(label: int) -> None:
        results[label] = (
            server.client()
            .audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(2.0 + label % 7, label)))
            .text
        )

    threads = [threading.Thread(target=ask, args=(label,)) for label in range(101, 107)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while server.health()["in_flight"] < len(threads) and time.monotonic() < deadline:
        time.sleep(0.05)
    hold_file.unlink()
    for thread in threads:
        thread.join(30)
    assert results == {label: f"w{label}" for label in range(101, 107)}
    assert max(requests for _, requests in server.health()["recent_batches"]) > 1


def test_models_lists_the_served_model(server: Server) -> None:
    ids = [model.id for model in server.client().models.list()]
    assert ids == ["label", "whisper-1"]


def test_an_english_only_model_refuses_translation(server: Server) -> None:
    with pytest.raises(openai.BadRequestError, match="cannot translate"):
        server.client().audio.translations.create(model="whisper-1", file=("a.wav", wav_bytes(2.0, 100)))


def test_bad_and_empty_audio_get_400_in_openais_error_shape(server: Server) -> None:
    bad = post(server.url, b"this is not audio at all" * 10, name="notes.wav")
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert bad.json()["error"]["param"] == "file"
    empty = post(server.url, b"", name="empty.wav")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        server.client().audio.transcriptions.create(model="whisper-1", file=("x.wav", b"RIFF0000WAVEjunk"))


def test_bad_fields_and_unknown_models_are_named(server: Server) -> None:
    fmt = post(server.url, wav_bytes(1.0, 100), response_format="docx")
    assert fmt.status_code == 400 and fmt.json()["error"]["param"] == "response_format"
    model = httpx2.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": ("a.wav", wav_bytes(1.0, 100))},
        data={"model": "gpt-9"},
        timeout=30,
    )
    assert model.status_code == 404 and model.json()["error"]["code"] == "model_not_found"


def test_a_client_that_disconnects_takes_its_windows_out(server: Server, hold_file: Path) -> None:
    before = server.health()["cancelled"]
    hold_file.touch()
    try:
        with pytest.raises(httpx2.ReadTimeout):
            post(server.url, wav_bytes(200.0, 222), timeout=1.5)
        deadline = time.monotonic() + 10
        while server.health()["cancelled"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hold_file.unlink()
    health = server.health()
    assert health["cancelled"] == before + 1
    assert health["in_flight"] == 0 and health["queued_windows"] == 0


def test_the_page_is_served(server: Server) -> None:
    page = httpx2.get(server.url + "/", timeout=5)
    assert page.status_code == 200 and "/v1/audio/transcriptions" in page.text


@pytest.fixture(scope="module")
def guarded(hold_file: Path) -> Iterator[Server]:
    running = Server(
        "--api-key", "sesame", "--max-upload-mb", "0.5", "--max-requests", "1", env={"SERVE_APP_HOLD": str(hold_file)}
    )
    yield running
    running.stop()


def test_the_api_key_is_required(guarded: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        guarded.client(api_key="wrong").audio.transcriptions.create(
            model="whisper-1", file=("a.wav", wav_bytes(1, 100))
        )
    result = guarded.client(api_key="sesame").audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav_bytes(1.0, 100))
    )
    assert result.text == "w100"


def test_an_upload_over_the_limit_gets_413(guarded: Server) -> None:
    response = httpx2.post(
        f"{guarded.url}/v1/audio/transcriptions",
        headers={"Authorization": "Bearer sesame"},
        files={"file": ("big.wav", wav_bytes(20.0, 100))},
        data={"model": "whisper-1"},
        timeout=30,
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def test_a_full_queue_gets_503_with_retry_after(guarded: Server, hold_file: Path) -> None:
    hold_file.touch()
    first: list[httpx2.Response] = []
    thread = threading.Thread(
        target=lambda: first.append(
            httpx2.post(
                f"{guarded.url}/v1/audio/transcriptions",
                headers={"Authorization": "Bearer sesame"},
                files={"file": ("a.wav", wav_bytes(3.0, 100))},
                data={"model": "whisper-1"},
                timeout=30,
            )
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while guarded.health()["in_flight"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        busy = httpx2.post(
            f"{guarded.url}/v1/audio/transcriptions",
            headers={"Authorization": "Bearer sesame"},
            files={"file": ("a.wav", wav_bytes(3.0, 200))},
            data={"model": "whisper-1"},
            timeout=30,
        )
        assert busy.status_code == 503
        assert int(busy.headers["Retry-After"]) >= 1
        assert busy.json()["error"]["type"] == "server_error"
    finally:
        hold_file.unlink()
        thread.join(30)
    assert first[0].status_code == 200


def test_sigterm_answers_requests_in_flight_refuses_new_ones_then_exits_0(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    running = Server(env={"SERVE_APP_HOLD": str(hold)})
    hold.touch()
    answers: list[httpx2.Response] = []
    thread = threading.Thread(target=lambda: answers.append(post(running.url, wav_bytes(3.0, 400))))
    thread.start()
    deadline = time.monotonic() + 10
    while running.health()["in_flight"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    running.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while running.health()["status"] != "draining" and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = post(running.url, wav_bytes(1.0, 100))
    assert refused.status_code == 503
    hold.unlink()
    thread.join(30)
    assert answers[0].status_code == 200 and answers[0].json() == {"text": "w400"}
    assert running.process.wait(20) == 0


def test_a_model_that_cannot_load_stops_the_server_with_exit_3() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.serve_app", "serve", "--port", str(port), "--model", "nonesuch"],
        capture_output=True,
        text=True,
        env={**os.environ, "SERVE_APP_NO_MODEL": "1"},
        timeout=120,
    )
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == ["error: cannot load model 'nonesuch': unknown model"]
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1.0)


def test_an_address_in_use_ends_with_exit_4() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tests.e2e.serve_app", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 4
    assert done.stderr.strip().splitlines()[-1] == f"error: cannot listen on 127.0.0.1:{port}"


def test_a_chunked_upload_over_the_limit_gets_413(guarded: Server) -> None:
    """No ``Content-Length``: the limit is enforced while the body is read."""
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    data = wav_bytes(20.0, 100)

    def body() -> Iterator[bytes]:
        yield head
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx2.post(
        f"{guarded.url}/v1/audio/transcriptions",
        content=body(),
        timeout=30,
        headers={"Authorization": "Bearer sesame", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "file"
