"""`llada serve`: the model behind an OpenAI-compatible HTTP API, loaded once, one job at a time."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from ..errors import Interrupted, UsageError
from ..limits import check_flags
from .options import ModelOpt, RunFlags, SamplerFlags, run_options, sampler_options
from .runtime import output


@sampler_options(steps='32 for text, 8 for pictures')
@run_options(decoder=True)
def serve(
    model: ModelOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (anything but loopback needs --api-key).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="LLADA_API_KEY", help="Bearer key clients must send."),
    ] = None,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Requests that may wait while one runs (more: 503).")
    ] = 8,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds a request may take, waiting included (then 504).")
    ] = 600.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", help="Largest request body in MiB (more: 413).")
    ] = 64.0,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Browser origin allowed to call the API (repeatable)."),
    ] = None,
    sampler: SamplerFlags = None,
    run: RunFlags = None,
) -> None:
    """Serve chat completions and images over HTTP (OpenAI-style, SGLang-Omni's image fields).

    Examples:  llada serve --model tiny
               llada serve --host 0.0.0.0 --api-key "$KEY" --quant nf4
               llada serve --sprint --steps 16      (defaults for requests that do not say)
               curl -s localhost:8000/v1/chat/completions -d '{"messages":[{"role":"user","content":"hi"}]}'
    """
    from ..memory.plan import PlanRequest
    from ..server.app import is_loopback
    from ..weights.registry import DEFAULT_MODEL

    check_flags(locals())
    if api_key is not None and not (api_key.isascii() and api_key.isprintable() and api_key.strip()):
        raise UsageError("--api-key must be printable ASCII (it travels in an HTTP header)", "e.g. a random hex string")  # fmt: skip
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"--host {host} is reachable from other machines: an API key is required",
            "pass --api-key KEY (or set LLADA_API_KEY), or keep the default --host 127.0.0.1",
        )
    if "*" in (cors_origin or []):
        raise UsageError(
            "--cors-origin '*' would let any web page use the model and read its answers",
            "name the origins, e.g. --cors-origin http://localhost:3000",
        )
    options, model = run.options(), model or DEFAULT_MODEL
    plan = PlanRequest(
        command="interleave", model=model, quant=options.quant, decoder_quant=options.decoder_quant,
        max_vram=options.max_vram, images=1,
    )  # fmt: skip
    from .plan import start_engine

    sock = None if run.dry_run else bind(host, port)  # a taken port is found before minutes of loading
    engine = start_engine(model, options, plan, dry=run.dry_run)
    warm(engine)
    from ..server.app import ServeOptions, create_app
    from ..server.protocol import Defaults

    settings = ServeOptions(
        api_key=api_key, max_queue=max_queue, timeout=timeout, max_body_mb=max_body_mb,
        cors_origins=tuple(cors_origin or ()), defaults=Defaults.tuned(sampler.settings),
    )  # fmt: skip
    listen(create_app(engine, settings), sock, host)


def warm(engine) -> None:
    """Load what requests need before the first one arrives (the decoder later, when stages take turns)."""
    from contextlib import nullcontext

    out = output()
    busy = out.console.status(f"loading {engine.label}") if out.interactive else nullcontext()
    with busy:
        engine.tokenizer  # noqa: B018
        engine.model  # noqa: B018
        if not engine.phased:
            engine.decoder("turbo")
    out.info(f"loaded {engine.label} on {engine.device}")


def listen(app, sock, host: str) -> None:
    """Run uvicorn until SIGINT or SIGTERM (exit 0): the running job is cancelled at its next step and
    its client answered 503, the waiting ones too."""
    import uvicorn

    out = output()
    access = logging.getLogger("llada.server")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.ERROR if out.level == 0 else logging.INFO)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.worker.cancel_all()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=30, lifespan="on"
    )
    shown = f"[{host}]" if ":" in host else host
    out.info(f"serving on http://{shown}:{sock.getsockname()[1]}/v1 (Ctrl-C stops)")
    try:
        Server(config).run(sockets=[sock])
    except Interrupted as exc:  # uvicorn hands the signal on once it has shut down: a clean stop
        out.info(f"stopped ({exc.signal})")


def bind(host: str, port: int):
    """The listening socket, bound here so a taken port is one clear line (port 0: any free one)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
