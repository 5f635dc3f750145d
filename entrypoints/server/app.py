"""The HTTP layer of ``app serve``: a Starlette app that speaks OpenAI's audio API and only translates.

Each request's upload is read by the ``AudioSource`` port on a worker thread and handed to the application's
``BatchScheduler``, which decodes it together with every other request in flight; this layer waits for its answer
(or for the client to go away, which withdraws the request's windows) and shapes it as OpenAI does.

Limits: uploads over ``max_upload_bytes`` get 413 (from ``Content-Length`` at once, else while reading); a full
scheduler 503 with ``Retry-After``; while draining (SIGTERM), every new request gets 503. With ``api_key``, the
``/v1`` routes need ``Authorization: Bearer <key>`` (401 without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

import numpy as np
from attrs import define, frozen
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from onepass_whisper.application.scheduler import BatchScheduler
from onepass_whisper.application.scheduler_records import QueueFullError, SchedulerClosedError
from onepass_whisper.domain.audio import Waveform
from onepass_whisper.domain.errors import (
    AudioLoadError,
    InvalidOptionError,
    TranscriptionError,
    UnsupportedLanguageError,
)
from onepass_whisper.domain.model import Task, Transcript
from onepass_whisper.domain.ports import AudioSource
from onepass_whisper.entrypoints.server import openai_shapes as shapes

DEFAULT_MAX_UPLOAD_BYTES: Final = 25 * 1024 * 1024  # OpenAI's own limit for audio uploads
PAGE: Final = Path(__file__).with_name("page.html")
MEDIA_TYPES: Final = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@frozen
class ServerSettings:
    model: str  # the loaded model's name, as ``GET /v1/models`` lists it
    can_translate: bool
    api_key: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES


@define
class ServerState:
    """What SIGTERM changes: once draining, new requests are refused while those in flight finish."""

    draining: bool = False


class UploadTooLarge(Exception):
    """The request body passed the upload limit while it was being read."""


def create_app(
    scheduler: BatchScheduler, audio: AudioSource, settings: ServerSettings, state: ServerState | None = None
) -> Starlette:
    """The ASGI app over ``scheduler`` (started, and closed by the caller)."""
    state = state or ServerState()

    async def transcriptions(request: Request) -> Response:
        return await _transcribe(request, "transcribe")

    async def translations(request: Request) -> Response:
        if not settings.can_translate:
            return _error(400, f"model {settings.model} cannot translate (an English-only model)", param="model")
        return await _transcribe(request, "translate")

    async def _transcribe(request: Request, task: Task) -> Response:
        try:
            form = await request.form(max_files=1, max_fields=32)
        except UploadTooLarge:
            return _too_large(settings)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidOptionError("file", "a multipart file field named 'file' is required")
            _check_model(_text(form.get("model")), settings)
            fmt = shapes.response_format(_text(form.get("response_format")))
            wanted = shapes.granularities([str(v) for v in form.getlist("timestamp_granularities[]")])
            options = shapes.decoding_options(
                task, _text(form.get("language")), _text(form.get("prompt")), _text(form.get("temperature"))
            )
            waveform = await run_in_threadpool(_read_upload, audio, upload)
            ticket = await run_in_threadpool(scheduler.submit, waveform, options)
        except _ModelNotFound as exc:
            return _error(404, str(exc), param="model", code="model_not_found")
        except InvalidOptionError as exc:
            return _error(400, str(exc), param=exc.option)
        except AudioLoadError as exc:
            return _error(400, f"could not decode the audio file: {exc.reason}", param="file")
        except QueueFullError as exc:
            return _error(503, str(exc), kind="server_error", headers={"Retry-After": str(exc.retry_after)})
        except SchedulerClosedError as exc:
            return _error(503, str(exc), kind="server_error", headers={"Retry-After": "5"})
        finally:
            await form.close()
        transcript = await _answer_or_withdraw(request, ticket)
        if transcript is None:  # the client went away: its windows left the queue, nobody reads this
            return Response(status_code=499)
        if isinstance(transcript, BaseException):
            if isinstance(transcript, (UnsupportedLanguageError, InvalidOptionError)):
                return _error(400, str(transcript), param="language")
            if isinstance(transcript, TranscriptionError):
                return _error(400, str(transcript))
            return _error(500, f"transcription failed: {type(transcript).__name__}: {transcript}", kind="server_error")
        if fmt == "json":
            return JSONResponse(shapes.json_body(transcript))
        if fmt == "verbose_json":
            return JSONResponse(shapes.verbose_body(transcript, task, wanted))
        return PlainTextResponse(shapes.subtitle_text(transcript, fmt), media_type=MEDIA_TYPES[fmt])

    async def models(request: Request) -> Response:
        entry = {"object": "model", "created": 0, "owned_by": "onepass-whisper"}
        names = [settings.model] + ([] if settings.model == shapes.OPENAI_MODEL_ALIAS else [shapes.OPENAI_MODEL_ALIAS])
        return JSONResponse({"object": "list", "data": [{"id": name, **entry} for name in names]})

    async def health(request: Request) -> Response:
        stats = scheduler.stats()
        body = {
            "status": "draining" if state.draining else "ok",
            "model": settings.model,
            "in_flight": stats.in_flight,
            "queued_windows": stats.queued_windows,
            "answered": stats.answered,
            "failed": stats.failed,
            "cancelled": stats.cancelled,
            "recent_batches": [[b.windows, b.requests] for b in stats.batches[-16:]],  # windows, requests
            "decoded_batches": stats.decoded_batches,
            "decoded_windows": stats.decoded_windows,
            "batch_requests": stats.batch_requests,
        }
        return JSONResponse(body, status_code=503 if state.draining else 200)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    routes = [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Gate, settings=settings, state=state)
    return app


class _Gate:
    """ASGI middleware: refuses while draining (503), checks the bearer key (401) and bounds the upload (413)."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], settings: ServerSettings, state: ServerState
    ) -> None:
        self.app = app
        self.settings = settings
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.state.draining and path != "/health":
            await _error(
                503, "shutting down: no new requests are taken", kind="server_error", headers={"Retry-After": "5"}
            )(scope, receive, send)
            return
        if self.settings.api_key is not None and path.startswith("/v1/"):
            if headers.get("authorization", "") != f"Bearer {self.settings.api_key}":
                await _error(
                    401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
                )(scope, receive, send)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_upload_bytes:
            await _too_large(self.settings)(scope, receive, send)
            return
        await self.app(scope, _bounded(receive, self.settings.max_upload_bytes), send)


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``UploadTooLarge`` once the body passes ``limit`` bytes (a chunked upload)."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge()
        return message

    return bounded


async def _answer_or_withdraw(request: Request, ticket: Any) -> Transcript | BaseException | None:
    """The ticket's transcript (or its error); None if the client disconnected first, after withdrawing it."""
    answer = asyncio.wrap_future(ticket.future)
    gone = asyncio.ensure_future(_disconnected(request))
    done, _ = await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    if answer not in done:
        ticket.cancel()
        return None
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    try:
        transcript: Transcript = answer.result()
    except asyncio.CancelledError:  # withdrawn: the server is closing without draining
        return SchedulerClosedError()
    except BaseException as error:  # noqa: BLE001 - shaped into an error response by the caller
        return error
    return transcript


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body is already read: only a disconnect comes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _read_upload(audio: AudioSource, upload: UploadFile) -> Waveform:
    """The upload's samples, through the ``AudioSource`` port (it reads files: the upload is spooled to one)."""
    suffix = Path(upload.filename or "").suffix[:16]
    descriptor, name = tempfile.mkstemp(prefix="onepass-upload-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            upload.file.seek(0)
            while block := upload.file.read(1 << 20):
                file.write(block)
        if path.stat().st_size == 0:
            raise AudioLoadError(upload.filename or "upload", "file is empty")
        blocks = list(audio.stream(path))
    finally:
        path.unlink(missing_ok=True)
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise AudioLoadError(upload.filename or "upload", "no samples")
    return Waveform(samples)


class _ModelNotFound(Exception):
    pass


def _check_model(model: str | None, settings: ServerSettings) -> None:
    if model is None:
        raise InvalidOptionError("model", "the 'model' field is required (e.g. whisper-1)")
    if model not in (settings.model, shapes.OPENAI_MODEL_ALIAS):
        raise _ModelNotFound(
            f"The model '{model}' does not exist here: this server runs {settings.model} "
            f"(also answering to {shapes.OPENAI_MODEL_ALIAS})"
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _too_large(settings: ServerSettings) -> Response:
    megabytes = settings.max_upload_bytes / (1024 * 1024)
    return _error(413, f"upload too large: the limit is {megabytes:g} MB", param="file")


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(shapes.error_body(message, kind, param, code), status_code=status, headers=headers)
