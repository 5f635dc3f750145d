"""``app serve``: an OpenAI-compatible transcription server whose concurrent requests share decoder batches.

The model is loaded before the server binds its port: a model that cannot be loaded ends the command with one line
and exit code 3, and nothing listens. SIGTERM (and Ctrl-C) drains: new requests get 503, those in flight are
answered, then the process exits 0; a second signal stops at once.
"""

from __future__ import annotations

import threading
from types import FrameType
from typing import Annotated, Final

import typer
import uvicorn
from rich.console import Console

from onepass_whisper.application.scheduler import DEFAULT_GATHER_SECONDS, DEFAULT_MAX_REQUESTS, BatchScheduler
from onepass_whisper.domain.errors import ModelLoadError
from onepass_whisper.entrypoints.console import error, note
from onepass_whisper.entrypoints.container import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, Container
from onepass_whisper.entrypoints.options import BatchSizeOption, ModelOption
from onepass_whisper.entrypoints.server.app import DEFAULT_MAX_UPLOAD_BYTES, ServerSettings, ServerState, create_app

# uvicorn closes an idle connection after 5 s, and httpx (under the openai client) keeps one for 5 s: a client that
# sends just then gets "Server disconnected without sending a response" (seen on the GPU run, docs/server.md). Kept
# longer here, a connection is always given up by the client first.
KEEP_ALIVE_SECONDS: Final = 75

SERVE_EXIT_CODES_HELP: Final = (
    "[b]Exit codes[/b]: 0 stopped (SIGTERM or Ctrl-C, after answering the requests in flight) · 2 usage error · "
    "3 the model could not be loaded · 4 the address cannot be bound."
)


def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    model: ModelOption = DEFAULT_MODEL,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="ONEPASS_API_KEY",
            help="Require 'Authorization: Bearer KEY' on /v1 routes (else 401).",
            show_default=False,
        ),
    ] = None,
    max_requests: Annotated[
        int, typer.Option(min=1, help="Requests in flight before new ones get 503 with Retry-After.")
    ] = DEFAULT_MAX_REQUESTS,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest upload accepted (else 413).")
    ] = DEFAULT_MAX_UPLOAD_BYTES / (1024 * 1024),
    gather_ms: Annotated[
        float,
        typer.Option(
            min=0.0, help="Longest wait for other requests' windows to fill a batch, after the oldest arrived."
        ),
    ] = DEFAULT_GATHER_SECONDS * 1000,
    pack_seconds: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=30.0,
            help="Requests up to this long share 30-s windows, several to a window, their words split back by "
            "time (docs/server.md); where the language is known before decoding. 0: each request its own windows.",
        ),
    ] = 0.0,
) -> None:
    """Serve OpenAI's audio API ([b]POST /v1/audio/transcriptions[/b], translations, models, health) and a page at
    [b]/[/b]; the windows of all requests in flight share decoder batches (docs/server.md)."""
    stderr = Console(stderr=True, soft_wrap=True, highlight=False)
    container: Container = ctx.obj
    container.config.model.from_value(model)
    container.config.batch_size.from_value(batch_size)
    try:
        scheduler = BatchScheduler(
            container.decoder,  # built on the scheduler's thread, the only one that uses it
            container.aligner(),
            batch_size=batch_size,
            gather_seconds=gather_ms / 1000,
            max_requests=max_requests,
            pack_seconds=pack_seconds,
            align_processes=container.align_processes(),
            lag_store=container.lag_store(),
        )
    except ModelLoadError as exc:
        error(stderr, str(exc))
        raise typer.Exit(3) from exc
    decoder, audio = scheduler.decoder, container.audio()
    state = ServerState()
    settings = ServerSettings(
        model=decoder.name,
        can_translate=decoder.is_multilingual,
        api_key=api_key,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
    )
    app = create_app(scheduler, audio, settings, state)
    server = _DrainingServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        ),
        scheduler,
        state,
    )
    note(stderr, f"serving {decoder.name} on http://{host}:{port} (batch {batch_size}); SIGTERM or Ctrl-C to stop")
    try:
        server.run()
    except SystemExit:  # uvicorn exits 1 when it cannot bind: that is exit 4 here, said below
        if server.started:
            raise
    finally:
        scheduler.close(drain=False)
    if not server.started:
        error(stderr, f"cannot listen on {host}:{port}")
        raise typer.Exit(4)
    raise typer.Exit(0)


class _DrainingServer(uvicorn.Server):
    """uvicorn, whose first SIGTERM/SIGINT drains: new requests are refused (503) while the scheduler answers those
    in flight; then uvicorn's own shutdown sends their responses and stops. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, scheduler: BatchScheduler, state: ServerState) -> None:
        super().__init__(config)
        self.scheduler = scheduler
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.draining:
            super().handle_exit(sig, frame)
            return
        self.state.draining = True
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def _drain(self) -> None:
        self.scheduler.close(drain=True)
        self.should_exit = True  # not ``handle_exit``: uvicorn would raise the signal again on the way out (exit 0)
