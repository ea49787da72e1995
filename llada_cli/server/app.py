"""The HTTP side of `llada serve`: FastAPI routes over one engine, one job at a time.

Loopback by default; a key is required for anything else (a Bearer token, compared in constant time).
Bodies have a size cap, images the CLI's limits; nothing a request names is read from disk or fetched.
Every error is an OpenAI-style JSON object with its status. One line per request goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field

from fastapi import Request  # module level: FastAPI resolves the routes' annotations here

from ..errors import LladaError
from .protocol import ApiError, Defaults, new_id, parse_chat, parse_images
from .worker import Cancelled, Job, QueueFull, Worker

log = logging.getLogger("llada.server")


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    api_key: str | None = None
    max_queue: int = 8  # requests that may wait while one runs
    timeout: float = 600.0  # seconds a request may take, waiting included
    max_body_mb: float = 64.0
    cors_origins: tuple[str, ...] = ()
    defaults: Defaults = field(default_factory=Defaults)  # the sampler flags `llada serve` was given


def create_app(engine, options: ServeOptions):
    """The ASGI application: routes, errors, the queue, the body cap."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    worker = Worker(options.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        worker.stop()  # shutdown: the running job and the waiting ones stop at their next step

    app = FastAPI(title="llada", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.worker = worker

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        body = ApiError(exc.status_code, str(exc.detail)).body()
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc):
        return JSONResponse(
            ApiError(400, f"invalid request: {exc.errors()[0].get('msg')}").body(), status_code=400
        )

    @app.exception_handler(Exception)
    async def internal(_request, exc: Exception):
        log.error("internal error: %s: %s", type(exc).__name__, exc)
        return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}").body(), status_code=500)

    def authorize(request: Request) -> None:
        """The Gate checks the key before the body is read; this is the routes' own check of it."""
        if not key_ok(request.headers.get("authorization", ""), options.api_key):
            raise ApiError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})

    async def body_json(request: Request):
        try:
            return json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(400, "the body is not valid JSON") from None

    def check_model(body) -> None:
        model = body.get("model") if isinstance(body, dict) else None
        if model not in (None, engine.label):
            raise ApiError(404, f"model {model!r} is not served here (this server runs {engine.label})", "model", "invalid_request_error", code="model_not_found")  # fmt: skip

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.label, "running": worker.running is not None, "waiting": max(worker.pending - 1, 0)}  # fmt: skip

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        report = getattr(engine._model, "quant_report", None)
        card = {
            "id": engine.label, "object": "model", "created": 0, "owned_by": "llada",
            "revision": engine.revision, "quantization": {"backbone": engine.options.quant, "decoder": engine.options.decoder_quant},
            "packed": report.record() if report is not None and report.scheme != "none" else None,
        }  # fmt: skip
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        from .jobs import ChatJob, stream_chunks
        from .protocol import chunk

        authorize(request)
        body = await body_json(request)
        check_model(body)
        parsed = parse_chat(body, options.defaults)
        rid = new_id()
        task = ChatJob(engine, parsed, rid)
        if not parsed.stream:
            return await run(request, task)
        job = Job(task, events=asyncio.Queue())
        future = submit(job)

        async def events():
            """The job's events as SSE chunks; the finished pictures, the finish reason and the usage last.
            A client that goes away cancels the job at its next step."""
            passes, getter = None, None
            deadline = time.monotonic() + options.timeout
            yield _sse(chunk(rid, engine.label, {"role": "assistant", "content": ""}))
            try:
                while True:
                    getter = asyncio.ensure_future(job.events.get())
                    left = deadline - time.monotonic()
                    done, _ = await asyncio.wait({getter, future}, timeout=max(left, 0), return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                    if getter in done:
                        yield _sse(stream_chunks(rid, engine.label, getter.result()))
                        continue
                    getter.cancel()
                    break
                while not job.events.empty():
                    yield _sse(stream_chunks(rid, engine.label, job.events.get_nowait()))
                if not future.done():
                    raise ApiError(504, "the request ran past its time limit")
                result, passes = future.result(), task.passes
                choice = result["choices"][0]
                message = choice["message"]
                if parsed.task in ("image", "edit"):  # pictures are sent whole, once decoded
                    delta = {"images": message["images"], "image": message["image"]}
                    yield _sse(chunk(rid, engine.label, delta | ({"content": message["content"]} if message["content"] else {})))  # fmt: skip
                yield _sse(chunk(rid, engine.label, {}, choice["finish_reason"]))
                if parsed.include_usage:  # as OpenAI sends it: a last chunk with no choices
                    yield _sse(chunk(rid, engine.label, {}, None, usage=result["usage"]) | {"choices": []})
            except Exception as exc:  # noqa: BLE001  (the stream has started: the error is its last event)
                yield _sse(_error(exc).body())
            finally:
                if getter is not None and not getter.done():
                    getter.cancel()
                worker.abandon(job)
                request.state.passes = passes
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/images/generations")
    async def generations(request: Request):
        from .jobs import ImagesJob

        authorize(request)
        body = await body_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        check_model(body)
        return await run(request, ImagesJob(engine, parse_images(body, None, options.defaults), new_id()))

    @app.post("/v1/images/edits")
    async def edits(request: Request):
        from .jobs import ImagesJob
        from .protocol import image_from_bytes

        authorize(request)
        try:
            form = await request.form(max_files=16, max_fields=64)
        except Exception:  # noqa: BLE001  (a body that is not multipart)
            raise ApiError(400, "the body must be multipart/form-data with image and prompt") from None
        uploads = [v for k, v in form.multi_items() if k in ("image", "image[]") and hasattr(v, "read")]
        if not uploads:
            raise ApiError(400, "an edit needs at least one image file", "image")
        images = [image_from_bytes(await f.read(), f"image[{i}]") for i, f in enumerate(uploads)]
        fields = {k: v for k, v in form.multi_items() if k not in ("image", "image[]")}
        check_model(fields)
        return await run(request, ImagesJob(engine, parse_images(fields, images, options.defaults), new_id()))

    def submit(job: Job):
        try:
            return worker.submit(job)
        except QueueFull:
            raise ApiError(503, f"the server is busy ({options.max_queue} requests waiting)", headers={"Retry-After": "5"}) from None  # fmt: skip

    async def run(request: Request, task) -> dict:
        """Queue the task and wait; a client that disconnects, or the time limit, cancels it."""
        job = Job(task)
        future = submit(job)
        deadline = time.monotonic() + options.timeout
        try:
            while not future.done():
                await asyncio.wait({future}, timeout=0.25)
                if await request.is_disconnected():
                    worker.abandon(job)
                    raise ApiError(499, "the client went away")
                if time.monotonic() > deadline:
                    worker.abandon(job)
                    raise ApiError(504, "the request ran past its time limit")
            result = future.result()
        except (Cancelled, LladaError) as exc:
            raise _error(exc) from None
        request.state.passes = getattr(task, "passes", None)
        return result

    return Gate(app, options)


UNAUTHORIZED = "a valid API key is required (Authorization: Bearer KEY)"


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): what serve binds keyless and what a keyless
    server accepts in `Host`. Any other name may resolve to anything."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_ok(authorization: str, key: str | None) -> bool:
    """The Bearer token against the key, in constant time (no key: anything goes)."""
    if key is None:
        return True
    token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
    return hmac.compare_digest(token.encode(), key.encode())


def _host_name(host: str) -> str:
    """`Host` without its port: "[::1]:8000" -> "::1", "localhost:8000" -> "localhost"."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Gate:
    """The ASGI wrapper in front of the routes, so its answers need nothing from them: requests from a
    web page of another origin (an `Origin` not in --cors-origin) and, on a keyless loopback server, a
    `Host` that is not loopback (DNS rebinding) are 403; a missing or wrong key is 401 before the body is
    read; a body over the cap is 413 (by its Content-Length, else as the bytes arrive). Every request
    gets one log line when its answer is done (streams too): method, path, status, seconds, forward
    passes. CORS (--cors-origin) wraps all of it, so a browser sees these answers too."""

    def __init__(self, app, options):
        self.app, self.options = app, options
        self.limit = int(options.max_body_mb * (1 << 20))
        self.handle = self._gate
        if options.cors_origins:
            from starlette.middleware.cors import CORSMiddleware

            self.handle = CORSMiddleware(self._gate, allow_origins=list(options.cors_origins), allow_methods=["*"], allow_headers=["*"])  # fmt: skip

    def __getattr__(self, name):  # app.state and friends, for the CLI and tests
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        await self.handle(scope, receive, send)

    async def _gate(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]
        scope.setdefault("state", {})

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _answer(sending, refusal)
                return
            body = await self._body(receive)
            if body is None:
                mib = self.limit / (1 << 20)
                await _answer(sending, ApiError(413, f"the request body is more than {mib:g} MiB (--max-body-mb)"))
                return
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: the disconnect, when it comes

            await self.app(scope, replay, sending)
        except Exception:  # noqa: BLE001  (answered 500 and logged by the app's handler already)
            pass
        finally:
            passes = scope["state"].get("passes")
            log.info(
                "%s %s %d %.2fs %s", scope["method"], scope["path"], status[0], time.perf_counter() - start,
                f"{passes} passes" if passes is not None else "-",
            )  # fmt: skip

    def _refusal(self, scope) -> ApiError | None:
        """What is refused from the headers alone: a foreign origin, a rebound host, the key, the size."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        origin = headers.get("origin")
        if origin is not None and origin not in self.options.cors_origins:
            return ApiError(403, f"requests from web pages of {origin} are refused (--cors-origin allows an origin)")  # fmt: skip
        if self.options.api_key is None and not is_loopback(_host_name(headers.get("host", "localhost"))):
            return ApiError(403, "a server without --api-key answers only requests addressed to the loopback host")  # fmt: skip
        if scope["path"] != "/health" and not key_ok(headers.get("authorization", ""), self.options.api_key):
            return ApiError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            mib = self.limit / (1 << 20)
            return ApiError(413, f"the request body is more than {mib:g} MiB (--max-body-mb)")
        return None

    async def _body(self, receive) -> bytes | None:
        """The whole body, or None past the cap."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            part = message.get("body", b"")
            size += len(part)
            if size > self.limit:
                return None
            chunks.append(part)
            more = message.get("more_body", False)
        return b"".join(chunks)


async def _answer(send, error: ApiError) -> None:
    """An error answered by the Gate itself."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(exc: Exception) -> ApiError:
    """A core error as its HTTP status: a usage error 400 (422 when the request cannot fit the model),
    out of memory 503, a cancelled job 503 (shutting down), anything else 500."""
    from ..errors import ContextOverflow, OutOfMemory, UsageError

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Cancelled):
        return ApiError(503, "the request was cancelled (the server is shutting down or the time ran out)")
    if isinstance(exc, OutOfMemory):
        return ApiError(503, exc.message, kind="server_error", headers={"Retry-After": "30"})
    if isinstance(exc, UsageError):
        return ApiError(422 if isinstance(exc, ContextOverflow) else 400, exc.message)
    if isinstance(exc, LladaError):
        return ApiError(500, exc.message, kind="server_error")
    return ApiError(500, f"internal error: {type(exc).__name__}", kind="server_error")


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
