"""`--server`: the commands' work sent to a running `llada serve`, or to an SGLang-Omni deployment or
router, over its chat completions API (the one route SGLang-Omni's router proxies).

Which server it is comes from `/v1/models` (`owned_by`). A llada server is sent every setting, so a
remote run gives what a local one would; SGLang-Omni is sent the fields it has, and a setting it has no
field for is refused before sending, naming the flag. Pictures are read in each published shape:
`message.images[]`, `message.image`, or an `image_url` content part.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ServerAccessRefused, ServerBusy, ServerFailed, ServerRefused, ServerUnavailable

LLADA, SGLANG = "llada", "sglang-omni"
RETRIES = 3  # busy (503, 429, 408) is retried this many times, after its Retry-After
BUSY = (503, 429, 408)
GONE = (502, 504)  # a proxy or router in front of a server that is down or slow
MAX_RETRY_WAIT = 30.0
# SGLang-Omni's size fields moved between versions (image_w/image_h, then width/height); unknown
# fields are ignored by the typed version [INFERRED], so both pairs are sent and the answer's size checked.
SGLANG_SIZE_KEYS = (("width", "height"), ("image_w", "image_h"))


@dataclass
class RemotePicture:
    """A picture a server made: pixels, the record (the server's, or one written here), codes if sent."""

    image: Any  # PIL.Image.Image
    record: Any  # GenerationRecord
    codes: list[int] | None = None
    seconds: float = 0.0


@dataclass
class RemoteAnswer:
    answer: str
    seed: int | None
    prompt_tokens: int | None
    generated_tokens: int | None
    finish_reason: str | None
    seconds: float


@dataclass
class RemoteDocument:
    parts: list = field(default_factory=list)  # ("text", str) and ("image", RemotePicture) in order
    finish_reason: str = ""


@dataclass(frozen=True)
class ServerInfo:
    flavour: str  # llada or sglang-omni
    model: str


def _refuse(what: str) -> ServerRefused:
    return ServerRefused(f"SGLang-Omni has no setting for {what}", "drop it, or use a `llada serve` server")


class Remote:
    """One server. `transport` replaces the network (tests hand in an httpx.MockTransport)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0, transport=None):
        from urllib.parse import urlsplit

        import httpx

        base = url.rstrip("/")
        if "/v1/" in base + "/":  # http://host:8000/v1 or a route under it: the server is the base
            base = base[: (base + "/").index("/v1/")]
        try:
            parts = urlsplit(base)
            parts.port  # noqa: B018  (raises for a port out of range)
        except ValueError as exc:
            raise ServerRefused(f"--server {url!r}: {exc}", "e.g. http://127.0.0.1:8000") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerRefused(
                f"--server {url!r} is not an http:// or https:// URL", "e.g. http://127.0.0.1:8000"
            )
        if api_key and not (api_key.isascii() and api_key.isprintable()):
            raise ServerRefused("--api-key must be printable ASCII (it travels in an HTTP header)")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url, self.keyed = base, bool(api_key)
        self.http = httpx.Client(
            base_url=base, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), transport=transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),  # --parallel decides
        )  # fmt: skip
        self._info: ServerInfo | None = None

    def close(self) -> None:
        self.http.close()

    # -- what the server is -----------------------------------------------------------------------------

    @property
    def info(self) -> ServerInfo:
        if self._info is None:
            self._info = self._card(None)
        return self._info

    def _card(self, model: str | None) -> ServerInfo:
        """The served model: the one named, else the first whose id names LLaDA (a router may list
        several), else the only one."""
        body = self._call("GET", "/v1/models")
        cards = body.get("data") if isinstance(body, dict) else None
        cards = [c for c in cards if isinstance(c, dict) and c.get("id")] if isinstance(cards, list) else []
        if not cards:
            raise ServerFailed(f"{self.url}/v1/models lists no model")
        named = [c for c in cards if c["id"] == model] if model else []
        llada = [c for c in cards if "llada" in str(c["id"]).lower()]
        card = (named or llada or cards)[0]
        if model and not named:
            served = ", ".join(str(c["id"]) for c in cards)
            raise ServerRefused(
                f"{self.url} serves {served}, not {model}",
                "drop --model (the server's model is used), or point --server at one that runs it",
            )
        flavour = LLADA if card.get("owned_by") == "llada" else SGLANG
        return ServerInfo(flavour, str(card["id"]))

    @property
    def label(self) -> str:
        return self.info.model

    def serving(self, model: str | None) -> Remote:
        """This server, once it answers and serves `model` (None: whatever it serves)."""
        self._info = self._card(model)  # asked now: a server that is down is one line before any work
        return self

    # -- tasks ------------------------------------------------------------------------------------------

    def answer(self, turns: list, settings, on_text=None) -> RemoteAnswer:
        """The next assistant turn of `turns` [(role, text, LoadedImages)]; `on_text` sees the text as
        it streams."""
        body = answer_body(self.info.flavour, self.label, turns, settings)
        start = time.perf_counter()
        if on_text is None:
            reply = self._call("POST", "/v1/chat/completions", body)
            choice, message = _choice(reply)
            text, finish = message.get("content"), choice.get("finish_reason")
            text = text if isinstance(text, str) else ""
            usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
            seed = _own(reply).get("seed", settings.seed)
        else:
            text, finish, usage, seed = "", None, {}, settings.seed
            for event in self._stream(body | {"stream": True, "stream_options": {"include_usage": True}}):
                choices = event.get("choices") if isinstance(event.get("choices"), list) else []
                choice = choices[0] if choices and isinstance(choices[0], dict) else {}
                delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
                if isinstance(delta.get("content"), str) and delta["content"]:
                    text += delta["content"]
                    on_text(delta["content"])
                finish = choice.get("finish_reason") or finish
                usage = event.get("usage") if isinstance(event.get("usage"), dict) else usage
                seed = _own(event).get("seed", seed)
        return RemoteAnswer(
            text, seed, usage.get("prompt_tokens"), usage.get("completion_tokens"), finish,
            time.perf_counter() - start,
        )  # fmt: skip

    def picture(self, prompt: str, grid, settings, decoder, seed: int) -> RemotePicture:
        """Text to image."""
        body = image_body(self.info.flavour, self.label, prompt, grid, settings, decoder, seed)
        start = time.perf_counter()
        reply = self._call("POST", "/v1/chat/completions", body)
        _, message = _choice(reply)
        entry = read_pictures(message)[0]
        px = decoder.pixels_per_code
        picture = self._picture(entry, lambda image: image_record(self, prompt, seed, image, settings, decoder, message))  # fmt: skip
        if picture.image.size != (grid[1] * px, grid[0] * px):
            w, h = picture.image.size
            raise ServerFailed(f"the server drew {w}x{h}, not the {grid[1] * px}x{grid[0] * px} asked for")
        picture.seconds = time.perf_counter() - start
        return picture

    def check_picture(self, prompt: str, grid, settings, decoder) -> None:
        """Refuse, before any work, a picture this server has no settings for."""
        image_body(self.info.flavour, self.label, prompt, grid, settings, decoder, 0)

    def check_edit(self, n_images: int, settings, grid=None) -> None:
        edit_refusals(self.info.flavour, n_images, settings, grid)

    def edit(self, images: list, instruction: str, settings, decoder, seed: int, grid=None) -> RemotePicture:
        """An edit of `images` (LoadedImage; the first edited, the others references)."""
        body = edit_body(self.info.flavour, self.label, images, instruction, settings, decoder, seed, grid)
        start = time.perf_counter()
        reply = self._call("POST", "/v1/chat/completions", body)
        _, message = _choice(reply)
        entry = read_pictures(message)[0]
        picture = self._picture(entry, lambda image: edit_record(self, images, instruction, seed, image, settings, decoder))  # fmt: skip
        sources = picture.record.images
        if sources:  # the server saw PNG copies: the record names the files as a local run would
            fixed = [s | {"source": i.source, "sha256": i.sha256, "first_frame_of_animation": i.animated} for s, i in zip(sources, images, strict=False)]  # fmt: skip
            picture.record = picture.record.with_(images=fixed)
        picture.seconds = time.perf_counter() - start
        return picture

    def interleave(self, prompt: str, settings, decoder, seed: int, images: list) -> RemoteDocument:
        body = interleave_body(self.info.flavour, self.label, prompt, settings, decoder, seed, images)
        reply = self._call("POST", "/v1/chat/completions", body)
        choice, message = _choice(reply)
        pictures = {p.get("id"): p for p in read_pictures(message, required=False)}
        own = _own(reply)  # a llada server's own finish reason ("context", ...)
        doc = RemoteDocument(finish_reason=own.get("finish_reason") or choice.get("finish_reason") or "stop")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        content = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
        segments = message.get("segments")  # SGLang-Omni's older interleaved shape
        if isinstance(segments, list) and not any(p.get("type") == "image_ref" for p in content):
            content = [_segment_part(s) for s in segments if isinstance(s, dict)]
        frame = 0
        for part in content:
            kind = part.get("type")
            if kind == "text" and part.get("llada_kind") == "error":
                doc.parts.append(("error", part["text"].removeprefix("[llada: ").removesuffix("]")))
            elif kind == "text" and isinstance(part.get("text"), str) and part["text"]:
                doc.parts.append(("text", part["text"]))
            elif kind in ("image_ref", "image_url"):
                entry = pictures.get(part.get("image_id")) if kind == "image_ref" else _data_uri_entry(part)
                if entry is None:
                    raise ServerFailed(f"the answer refers to image {part.get('image_id')!r}, which it lacks")
                frame += 1
                record = lambda image, f=frame: frame_record(self, prompt, seed, image, settings, decoder, f)  # noqa: E731
                doc.parts.append(("image", self._picture(entry, record)))
        return doc

    # -- pictures ---------------------------------------------------------------------------------------

    def _picture(self, entry: dict, make_record) -> RemotePicture:
        from ..io.images import BadInput, open_image
        from ..records import GenerationRecord

        try:
            data = base64.b64decode(entry.get("data") or "", validate=True)
            image = open_image(data, "the server's image").image
        except (ValueError, TypeError, BadInput) as exc:
            raise ServerFailed(
                f"the server sent an image llada cannot read ({getattr(exc, 'message', exc)})"
            ) from None
        raw = entry.get("record")
        record = (
            GenerationRecord.from_json(raw, "the server's record")
            if isinstance(raw, dict)
            else make_record(image)
        )
        codes = entry.get("codes") if isinstance(entry.get("codes"), list) else None
        return RemotePicture(image=image, record=record, codes=codes)

    # -- HTTP -------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        """One request, its JSON answer; busy (503) is retried after Retry-After."""
        for attempt in range(RETRIES + 1):
            response = self._send(method, path, body)
            if response.status_code in BUSY and attempt < RETRIES:
                time.sleep(_retry_after(response))
                continue
            _raise_for(response, self.url, self.keyed)
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise ServerFailed(f"{self.url}{path} answered something that is not a JSON object")
            return answer
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: dict | None, stream: bool = False):
        import httpx

        try:
            request = self.http.build_request(method, path, json=body)
            return self.http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise ServerUnavailable(
                f"{self.url} did not answer in time", "a long job? raise --server-timeout; else check the server"
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnavailable(
                f"cannot reach {self.url}: {_reason(exc)}",
                "is `llada serve` (or SGLang-Omni) running there? start it, then re-run (--resume for a batch)",
            ) from None

    def _stream(self, body: dict):
        """The JSON events of a streamed chat completion."""
        import httpx

        response = self._send("POST", "/v1/chat/completions", body, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                _raise_for(response, self.url, self.keyed)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    raise ServerFailed("the server streamed an event that is not a JSON object")
                if "error" in event:
                    _raise_error(event, 500, self.url)
                yield event
            raise ServerUnavailable(f"{self.url} broke off the answer (the stream ended without [DONE])")
        except httpx.TimeoutException:
            raise ServerUnavailable(
                f"{self.url} did not answer in time", "a long job? raise --server-timeout; else check the server"
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"{self.url} broke off the answer: {_reason(exc)}") from None
        finally:
            response.close()


def _choice(reply: dict) -> tuple[dict, dict]:
    """The first choice of a chat completion and its message, or ServerFailed naming what is missing."""
    choices = reply.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ServerFailed("the server's answer has no choices[0].message")
    return choice, message


def _own(reply: dict) -> dict:
    """A llada server's own fields (seed, finish reason) beside the OpenAI ones."""
    own = reply.get("llada")
    return own if isinstance(own, dict) else {}


def _reason(exc) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1]  # "[Errno 111] Connection refused" -> "Connection refused"


def _retry_after(response) -> float:
    try:
        wait = float(response.headers.get("retry-after", "2"))
    except ValueError:
        return 2.0
    return min(max(wait, 0.0), MAX_RETRY_WAIT) if wait == wait else 2.0  # NaN: the default


def _raise_for(response, url: str, keyed: bool = False) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:  # a web page, a proxy's text: its first line, or a note that it is not JSON
        text = response.text.strip()
        first = text.splitlines()[0][:120] if text else ""
        body = {"detail": "an answer that is not JSON (a web page?)" if first.startswith("<") or not first else first}
    if response.status_code == 404 and response.request.url.path.endswith("/v1/models"):
        raise ServerRefused(
            f"{url} has no /v1/models: it is not an OpenAI-style server",
            "point --server at a `llada serve` or SGLang-Omni base URL, e.g. http://127.0.0.1:8000",
        )
    _raise_error(body, response.status_code, url, keyed)


def _raise_error(body: dict, status: int, url: str, keyed: bool = False) -> None:
    """The server's own message: OpenAI's `error.message`, or FastAPI's `detail` (SGLang-Omni)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if isinstance(error, dict):
        message, param = error.get("message"), error.get("param")
        status = error.get("code") if isinstance(error.get("code"), int) else status
    else:
        detail = body.get("detail") if isinstance(body, dict) else body
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # pydantic's 422
            message = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
        else:
            message = str(detail)
        param = None
    text = f"the server refused the request ({status}): {message}"
    if status in (401, 403):
        hint = "the key given (--api-key or LLADA_API_KEY) is not the server's" if keyed else "pass the server's key with --api-key (or LLADA_API_KEY)"  # fmt: skip
        raise ServerAccessRefused(text, hint)
    if status == 404 and param == "model":
        raise ServerAccessRefused(text, "drop --model, or point --server at a server that runs it")
    if status in BUSY:
        raise ServerBusy(f"{url} is busy or shutting down ({status}: {message})", "try again later (--resume for a batch)")  # fmt: skip
    if status in GONE:
        raise ServerUnavailable(f"{url} is down or shutting down ({status}: {message})", "try again later (--resume for a batch)")  # fmt: skip
    if 400 <= status < 500:
        raise ServerRefused(text, f"the field at fault: {param}" if param else None)
    raise ServerFailed(f"the server failed the request ({status}): {message}")


# -- request bodies ----------------------------------------------------------------------------------


_URIS: dict[str, str] = {}  # by source sha256: a conversation resends its pictures every turn
_URIS_KEPT = 16
_URIS_LOCK = threading.Lock()


def data_uri(image) -> str:
    """A LoadedImage as a PNG data: URI: lossless, so the server sees the pixels llada read. Encoded once
    per picture (the same source bytes give the same pixels), the last few kept."""
    from ..io.imagefiles import png_bytes

    with _URIS_LOCK:  # --parallel edits encode from several threads
        uri = _URIS.pop(image.sha256, None)
    if uri is None:
        uri = "data:image/png;base64," + base64.b64encode(png_bytes(image.image, None)).decode()
    with _URIS_LOCK:
        _URIS[image.sha256] = uri  # most recent last
        while len(_URIS) > _URIS_KEPT:
            del _URIS[next(iter(_URIS))]
    return uri


def _content(text: str, images: list) -> str | list:
    if not images:
        return text
    parts = [{"type": "image_url", "image_url": {"url": data_uri(i)}} for i in images]
    return parts + [{"type": "text", "text": text}]


def _sampler_fields(flavour: str, sampler, defaults, steps: bool) -> dict:
    """The sampler's fields for a request: all of them for llada; for SGLang-Omni its own (temperature,
    top_p, top_k, min_p), and a refusal for any other setting changed from llada's default."""
    if flavour == LLADA:
        out = {
            k: getattr(sampler, k)
            for k in ("temperature", "top_p", "top_k", "min_p", "block_length", "threshold")
        }
        out["sprint"] = sampler.record()["sprint"]
        return out | ({"steps": sampler.steps} if steps else {})
    for name, flag in (
        ("block_length", "--block-length"),
        ("threshold", "--threshold"),
        ("sprint", "--sprint"),
    ):
        if getattr(sampler, name) != getattr(defaults, name):
            raise _refuse(flag)
    if steps and sampler.steps != defaults.steps:
        raise _refuse("--steps on text answers (its text sampler takes no step count)")
    out = {"temperature": sampler.temperature, "top_p": sampler.top_p, "min_p": sampler.min_p}
    return out | ({"top_k": sampler.top_k} if sampler.top_k > 0 else {})


def answer_body(flavour: str, model: str, turns: list, settings) -> dict:
    from ..settings import ChatSettings

    if flavour == SGLANG and settings.system != ChatSettings().system:
        raise _refuse("--system (its prompt builder drops system messages)")
    messages = [{"role": "system", "content": settings.system}] if settings.system else []
    messages += [{"role": role, "content": _content(text, images)} for role, text, images in turns]
    body = {"model": model, "messages": messages, "modalities": ["text"], "max_tokens": settings.max_tokens}
    body |= _sampler_fields(flavour, settings.sampler, ChatSettings().sampler, steps=True)
    return body | ({"seed": settings.seed} if settings.seed is not None else {})


def _decoder_fields(flavour: str, decoder) -> dict:
    out = {"decode_mode": "decoder-turbo" if decoder.mode == "turbo" else "normal"}
    out["decoder_steps"] = decoder.resolved_steps  # SGLang-Omni's default is 50 whatever the mode
    if flavour == LLADA:
        out["resolution_multiplier"] = decoder.resolution_multiplier
    elif decoder.resolution_multiplier != 2:  # its typed version derives the grid as pixels / 32
        raise _refuse("--resolution-multiplier other than 2")
    return out


def _image_sampler(flavour: str, sampler, defaults) -> tuple[dict, dict]:
    """(top-level fields, image_generation fields) of an image task's sampler."""
    top = _sampler_fields(flavour, sampler, defaults, steps=False)
    return top, {"dllm_steps": sampler.steps}


def image_body(flavour: str, model: str, prompt: str, grid, settings, decoder, seed: int) -> dict:
    from ..settings import ImageSettings

    base = ImageSettings()
    px = decoder.pixels_per_code
    top, gen = _image_sampler(flavour, settings.sampler, base.sampler)
    gen |= {"mode": "thinking" if settings.thinking else "normal", "seed": seed, "cfg_scale": settings.cfg}
    gen |= _decoder_fields(flavour, decoder)
    if flavour == LLADA:
        gen |= {"width": grid[1] * px, "height": grid[0] * px}
        if settings.thinking:
            gen |= {
                "thinking_length": settings.thinking_length,
                "thinking_steps": settings.thinking_sampler.steps,
            }
    else:
        for w, h in SGLANG_SIZE_KEYS:
            gen |= {w: grid[1] * px, h: grid[0] * px}
        gen["cfg_rescale"] = 0.0  # SGLang-Omni's default 0.7 is not the official rule
        if settings.cfg < 1.0:
            raise _refuse("--cfg below 1 (its guidance starts at 1.0, which means none)")
        if settings.thinking and (settings.thinking_length != base.thinking_length or settings.thinking_sampler.steps != base.thinking_sampler.steps):  # fmt: skip
            raise _refuse("--thinking-length or --thinking-steps")
    messages = [{"role": "user", "content": prompt}]
    # SGLang-Omni answers a thinking request's text only when "text" is asked for; its backbone is
    # seeded from the top-level seed
    modalities = ["text", "image"] if settings.thinking and flavour == SGLANG else ["image"]
    sglang = {"seed": seed} if flavour == SGLANG else {}
    return {"model": model, "messages": messages, "modalities": modalities, **top, **sglang, "image_generation": gen}  # fmt: skip


def edit_refusals(flavour: str, n_images: int, settings, grid) -> None:
    """What SGLang-Omni's edits cannot do, refused by flag (before any image is read or sent)."""
    from ..settings import EditSettings

    if flavour == LLADA:
        return
    base = EditSettings()
    _sampler_fields(flavour, settings.sampler, base.sampler, steps=False)
    if n_images > 1:
        raise ServerRefused(
            "SGLang-Omni edits one image: it has no reference images",
            "edit with one --image, or use a `llada serve` server",
        )
    for changed, flag in ((grid is not None, "--size (its edits keep the source's size)"), (settings.budget != base.budget, "--budget"), (settings.fit, "--fit")):  # fmt: skip
        if changed:
            raise _refuse(flag)


def edit_body(
    flavour: str, model: str, images: list, instruction: str, settings, decoder, seed, grid
) -> dict:
    from ..settings import EditSettings

    edit_refusals(flavour, len(images), settings, grid)
    top, gen = _image_sampler(flavour, settings.sampler, EditSettings().sampler)
    gen |= {"mode": "normal", "seed": seed, "cfg_text_scale": settings.cfg_text, "cfg_image_scale": settings.cfg_image}  # fmt: skip
    gen |= _decoder_fields(flavour, decoder)
    if flavour == LLADA:
        gen |= {"budget": settings.budget, "fit": settings.fit}
        if grid is not None:
            px = decoder.pixels_per_code
            gen |= {"width": grid[1] * px, "height": grid[0] * px}
    else:
        gen["cfg_rescale"] = 0.0
    messages = [{"role": "user", "content": _content(instruction, images)}]
    sglang = {"seed": seed} if flavour == SGLANG else {}
    return {"model": model, "messages": messages, "modalities": ["image"], **top, **sglang, "image_generation": gen}  # fmt: skip


def interleave_body(
    flavour: str, model: str, prompt: str, settings, decoder, seed: int, images: list
) -> dict:
    from ..settings import InterleaveSettings

    base = InterleaveSettings()
    top = _sampler_fields(flavour, settings.text_sampler, base.text_sampler, steps=flavour == LLADA)
    gen = {
        "mode": "interleaved", "seed": seed, "max_frames": settings.max_frames,
        "text_max_new_tokens": settings.max_new_tokens, "max_image_tokens": settings.max_image_tokens,
        "cfg_scale": settings.cfg, "cfg_text_scale": settings.cfg_text, "cfg_image_scale": settings.cfg_image,
        "dllm_steps": settings.image_sampler.steps,
    } | _decoder_fields(flavour, decoder)  # fmt: skip
    if flavour == SGLANG:
        if images:
            raise ServerRefused(
                "SGLang-Omni interleaves from text only", "drop --image, or use `llada serve`"
            )
        if settings.system is not None:
            raise _refuse("--system (its prompt builder drops system messages)")
        if settings.text_sampler.steps != base.text_sampler.steps or settings.image_sampler.steps != base.image_sampler.steps:  # fmt: skip
            raise _refuse("--steps or --image-steps on interleave (it runs 32 of each)")
        gen.pop("dllm_steps")  # its newer drafts refuse the field; 32 is its default
        gen["cfg_rescale"] = 0.0
    messages = [{"role": "system", "content": settings.system}] if settings.system else []
    messages.append({"role": "user", "content": _content(prompt, images)})
    sglang = {"seed": seed} if flavour == SGLANG else {}
    return {
        "model": model,
        "messages": messages,
        "modalities": ["text", "image"],
        **top,
        **sglang,
        "image_generation": gen,
    }


# -- pictures in answers -----------------------------------------------------------------------------


def _data_uri_entry(part: dict) -> dict | None:
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    return {"data": url.partition(",")[2], "format": "png"}


def _segment_part(segment: dict) -> dict:
    """One of SGLang-Omni's older interleaved `segments` as a content part."""
    data = segment.get("data")
    if segment.get("kind") == "image" and isinstance(data, dict):
        return {"type": "image_url", "image_url": {"url": data.get("url")}}
    return {"type": "text", "text": data if isinstance(data, str) else ""}


def read_pictures(message: dict, required: bool = True) -> list[dict]:
    """The pictures of an answer, whichever shape it has: `images[]` (llada, SGLang-Omni's newer),
    `image` (SGLang-Omni's first), or `image_url` content parts (its t2i variant)."""
    found = [p for p in message.get("images") or [] if isinstance(p, dict) and p.get("data")]
    if not found and isinstance(message.get("image"), dict) and message["image"].get("data"):
        found = [message["image"]]
    if not found and isinstance(message.get("content"), list):
        found = [e for p in message["content"] if isinstance(p, dict) and p.get("type") == "image_url" and (e := _data_uri_entry(p))]  # fmt: skip
    if not found and required:
        raise ServerFailed(
            "the server answered without an image", "is it serving LLaDA2.0-Uni's image stages?"
        )
    return found


# -- records for pictures from servers that send none -------------------------------------------------


def _record(remote: Remote, prompt: str, seed: int, image, settings: dict, decoder, **extra):
    from ..records import GenerationRecord, decoder_record

    w, h = image.size
    px = decoder.pixels_per_code
    return GenerationRecord(
        model=remote.label,
        prompt=prompt,
        seed=seed,
        width=w,
        height=h,
        grid=(h // px, w // px),
        settings=settings | decoder_record(decoder) | {"server": remote.url, "engine": remote.info.flavour},
        **extra,
    )


def image_record(remote, prompt, seed, image, settings, decoder, message):
    from ..records import image_settings_record

    thinking = message.get("content") if isinstance(message.get("content"), str) else None
    return _record(remote, prompt, seed, image, image_settings_record(settings), decoder, thinking=thinking)


def edit_record(remote, images, instruction, seed, image, settings, decoder):
    from ..records import edit_settings_record

    sources = [i.record() for i in images]
    return _record(
        remote, instruction, seed, image, edit_settings_record(settings), decoder,
        instruction=instruction, images=sources,
    )  # fmt: skip


def frame_record(remote, prompt, seed, image, settings, decoder, frame: int):
    from ..records import interleave_settings_record

    return _record(remote, prompt, seed, image, interleave_settings_record(settings), decoder, frame=frame)
