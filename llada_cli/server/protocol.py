"""The wire format: OpenAI chat completions and images, with SGLang-Omni's extensions for LLaDA2.0-Uni.

Requests are parsed into llada's own settings (every value through its flag's rule, llada_cli.limits) and
a task; a bad field is an `ApiError` naming it (`param`), never a traceback. Images arrive only as
`data:` URIs or uploaded files: nothing named in a request is read from disk or fetched. Responses carry
both image shapes SGLang-Omni has published (`message.image` and `message.images[]`), so a client written
for either server reads llada's, and interleaved answers as ordered `text` / `image_ref` parts.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..settings import ChatSettings, DecoderSettings, EditSettings, ImageSettings, InterleaveSettings

DECODE_MODES = {"decoder-turbo": "turbo", "turbo": "turbo", "normal": "normal"}
# OpenAI fields a client may send that llada accepts only at their neutral value
NEUTRAL = {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "stop": None}
CHAT_FIELDS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
    "seed", "stream", "stream_options", "modalities", "images", "image_generation", "user",
    "response_format", "steps", "block_length", "threshold", "sprint", *NEUTRAL,
}  # fmt: skip
IMAGE_GENERATION_FIELDS = {
    "mode", "decode_mode", "decoder_steps", "dllm_steps", "cfg_scale", "cfg_text_scale", "cfg_image_scale",
    "cfg_rescale", "seed", "width", "height", "image_w", "image_h", "size", "format", "resolution_multiplier",
    "max_frames", "text_max_new_tokens", "max_image_tokens", "image_max_new_tokens", "thinking_length",
    "thinking_steps",
    "block_length", "threshold", "budget", "fit",
}  # fmt: skip
IMAGES_FIELDS = {
    "prompt", "model", "n", "size", "width", "height", "response_format", "output_format", "seed",
    "num_inference_steps", "guidance_scale", "user", "image", "image[]", *IMAGE_GENERATION_FIELDS,
    "temperature", "top_p", "top_k", "min_p", "steps", "block_length", "threshold", "sprint",
}  # fmt: skip
MAX_N = 8  # pictures per images request


class ApiError(Exception):
    """An OpenAI-style error: the status, one message, the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str | None = None,
        headers=None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}
        self.code = code
        default = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 413: "request_too_large", 503: "server_busy", 504: "timeout"}  # fmt: skip
        self.kind = kind or default.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _check(rule: str, value, param: str):
    """A value through llada's rule for `rule`, as a 400 naming `param`."""
    from ..limits import check

    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, f"{param} must be a number, not {type(value).__name__}", param)
    try:
        return check(rule, value, where=param)
    except UsageError as exc:
        raise ApiError(400, exc.message, param) from None


def _number(obj: dict, key: str, rule: str, path: str, kind=float):
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):  # multipart form fields arrive as text
        try:
            value = kind(value)
        except ValueError:
            raise ApiError(400, f"{path}{key} must be a number, not {value!r}", f"{path}{key}") from None
    return _check(rule, value, f"{path}{key}")


def _text(obj: dict, key: str, path: str = "", required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(400, f"{path}{key} must be a non-empty string", f"{path}{key}")
    return value


def image_from_bytes(data: bytes, param: str):
    """A user picture from bytes, with the CLI's limits: too big is 413, not an image is 400."""
    from ..io.images import MAX_INPUT_BYTES, BadInput, open_image

    if len(data) > MAX_INPUT_BYTES:
        raise ApiError(413, f"{param}: the image is more than {MAX_INPUT_BYTES >> 20} MiB", param)
    try:
        return open_image(data, param)
    except BadInput as exc:
        status = 413 if "more than llada decodes" in exc.message else 400
        raise ApiError(status, exc.message, param) from None


def image_from_uri(uri, param: str):
    """A `data:image/...;base64,...` URI; a path or a URL is refused (llada never reads or fetches them)."""
    if isinstance(uri, dict):
        uri = uri.get("url")
    if not isinstance(uri, str):
        raise ApiError(400, f"{param} must be a data: URI string", param)
    if not uri.startswith("data:"):
        raise ApiError(
            400,
            f"{param}: only data: URIs are accepted; llada serve never reads files or fetches URLs",
            param,
        )
    header, _, payload = uri.partition(",")
    if ";base64" not in header:
        raise ApiError(400, f"{param}: the data: URI must be base64 encoded", param)
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)  # MIME writers wrap lines
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param}: the data: URI is not valid base64", param) from None
    return image_from_bytes(data, param)


def _flag(obj: dict, key: str, path: str = "") -> bool:
    """A true/false field, from JSON or a form ("true", "false", "1", "0")."""
    value = obj.get(key, False)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise ApiError(400, f"{path}{key} must be true or false", f"{path}{key}")
    return value


@dataclass
class ChatRequest:
    """A parsed chat completion: the task, its inputs and its settings."""

    task: str  # answer, image, edit, interleave
    turns: list = field(default_factory=list)  # (role, text, images) for answers
    system: str | None = None
    prompt: str = ""  # the last user text: a picture's prompt, an edit's instruction, a document's request
    images: list = field(default_factory=list)  # LoadedImage of the last user message (image tasks)
    settings: Any = None  # ChatSettings, ImageSettings, EditSettings or InterleaveSettings
    decoder: Any = None
    seed: int | None = None
    grid: tuple[int, int] | None = None
    stream: bool = False
    include_usage: bool = False
    thinking_text: bool = False  # ["text", "image"] with thinking: the reasoning is the content


def _messages(body: dict) -> tuple[list, str | None]:
    """[(role, text, images)] of a chat's messages, and the system prompt."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    turns, system = [], None
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, f"{where} must be an object with role system, user or assistant", where)
        text, images = _content(m.get("content"), f"{where}.content")
        if m["role"] == "system":
            system = text
        else:
            turns.append((m["role"], text, images))
    extra = body.get("images")
    if extra is not None:  # SGLang-Omni: images of the last user message
        if not isinstance(extra, list):
            raise ApiError(400, "images must be a list of data: URIs", "images")
        users = [i for i, t in enumerate(turns) if t[0] == "user"]
        if not users:
            raise ApiError(400, "images need a user message", "images")
        role, text, images = turns[users[-1]]
        turns[users[-1]] = (
            role,
            text,
            images + [image_from_uri(u, f"images[{j}]") for j, u in enumerate(extra)],
        )
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "the last message must be the user's", "messages")
    return turns, system


def _content(content, where: str) -> tuple[str, list]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ApiError(400, f"{where} must be a string or a list of parts", where)
    texts, images = [], []
    for j, part in enumerate(content):
        p = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "image"):
            images.append(image_from_uri(part.get(kind), f"{p}.{kind}"))
        else:
            raise ApiError(400, f"{p} must be a text, image_url or image part", p)
    return "".join(texts), images


def _unknown(body: dict, allowed: set[str], path: str = "", neutral_only=NEUTRAL) -> None:
    for key in body:
        if key not in allowed:
            raise ApiError(400, f"unknown field {path}{key}", f"{path}{key}")
    for key, neutral in neutral_only.items():
        if key in allowed and body.get(key) not in (None, neutral):
            raise ApiError(400, f"{key} {body[key]!r} is not supported (only {neutral!r})", key)


def sampler_from(body: dict, base, steps_key: str | None = None, gen: dict | None = None, p: str = "image_generation."):
    """The sampler settings a request names (top-level temperature, top_p, top_k, min_p, steps,
    block_length, threshold; `dllm_steps` in image_generation) over `base`."""
    changes = {}
    for key, rule, kind in (("temperature", "temperature", float), ("top_p", "top_p", float), ("top_k", "top_k", int), ("min_p", "min_p", float), ("block_length", "block_length", int), ("threshold", "threshold", float)):  # fmt: skip
        value = _number(body, key, rule, "", kind)
        if value is not None:
            changes[key] = value
    steps = _number(body, "steps", "steps", "", int)
    if gen is not None and steps_key and gen.get(steps_key) is not None:
        steps = _number(gen, steps_key, "steps", p, int)
    if steps is not None:
        changes["steps"] = steps
    if "sprint" in body:
        changes["sprint"] = _sprint(body["sprint"])
    return dataclasses.replace(base, **changes)


def _sprint(value):
    """llada's `sprint` field: null (exact sampling) or an object of SPRINT's settings."""
    from ..sampling.sprint import SprintSettings

    if value is None or value is False:
        return None
    if value is True:
        return SprintSettings()
    if not isinstance(value, dict):
        raise ApiError(400, "sprint must be null, true or an object of SPRINT settings", "sprint")
    known = {f.name for f in dataclasses.fields(SprintSettings)}
    for key in value:
        if key not in known:
            raise ApiError(400, f"unknown field sprint.{key}", f"sprint.{key}")
    try:
        return SprintSettings(**value)
    except (UsageError, TypeError) as exc:
        raise ApiError(400, f"sprint: {getattr(exc, 'message', exc)}", "sprint") from None


def _grid(gen: dict, path: str, multiplier: int) -> tuple[int, int] | None:
    """An output grid from width/height (or image_w/image_h, or size "WxH"), checked like --size."""
    from ..limits import check_size, parse_size

    w, h = gen.get("width", gen.get("image_w")), gen.get("height", gen.get("image_h"))
    size = gen.get("size")
    if size is not None and size != "auto":
        try:
            w, h = parse_size(size, f"{path}size")
        except UsageError as exc:
            raise ApiError(400, exc.message, f"{path}size") from None
    if w is None and h is None:
        return None
    try:
        w, h = int(w if w is not None else 1024), int(h if h is not None else 1024)
        return check_size(w, h, multiplier, f"{path}size")
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, f"{path}width and height must be integers", f"{path}width") from None
    except UsageError as exc:
        raise ApiError(400, exc.message, f"{path}size") from None


def decoder_from(gen: dict, path: str):
    mode = gen.get("decode_mode", "turbo")
    if not isinstance(mode, str) or mode not in DECODE_MODES:
        raise ApiError(
            400, f"{path}decode_mode {mode!r} is not decoder-turbo or normal", f"{path}decode_mode"
        )
    steps = _number(gen, "decoder_steps", "decoder_steps", path, int)
    rm = _number(gen, "resolution_multiplier", "resolution_multiplier", path, int) or 2
    return DecoderSettings(mode=DECODE_MODES[mode], steps=steps, resolution_multiplier=rm)


def _image_generation(body: dict, p: str = "image_generation.") -> dict:
    gen = body.get("image_generation") or {}
    if not isinstance(gen, dict):
        raise ApiError(400, "image_generation must be an object", "image_generation")
    _unknown(gen, IMAGE_GENERATION_FIELDS, p)
    if gen.get("format", "png") != "png":
        raise ApiError(400, f"{p}format must be png", f"{p}format")
    if gen.get("cfg_rescale") not in (None, 0, 0.0):
        raise ApiError(
            400,
            f"{p}cfg_rescale is not supported by llada (0 only)",
            f"{p}cfg_rescale",
        )
    return gen


@dataclass(frozen=True)
class Defaults:
    """Each task's settings before a request's own fields: llada's, or with `llada serve`'s sampler
    flags over them (`tuned`). The `--server` client sends every setting, so these reach raw clients only."""

    chat: ChatSettings = field(default_factory=ChatSettings)
    image: ImageSettings = field(default_factory=ImageSettings)
    edit: EditSettings = field(default_factory=EditSettings)
    interleave: InterleaveSettings = field(default_factory=InterleaveSettings)

    @classmethod
    def tuned(cls, tune) -> Defaults:
        """`tune(SamplerSettings) -> SamplerSettings` applied to every task's samplers."""
        d, swap = cls(), dataclasses.replace
        return cls(
            chat=swap(d.chat, sampler=tune(d.chat.sampler)),
            image=swap(d.image, sampler=tune(d.image.sampler)),
            edit=swap(d.edit, sampler=tune(d.edit.sampler)),
            interleave=swap(d.interleave, text_sampler=tune(d.interleave.text_sampler), image_sampler=tune(d.interleave.image_sampler)),
        )  # fmt: skip


def parse_chat(body: Any, defaults: Defaults | None = None) -> ChatRequest:
    """A chat completion request as a task with its settings."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    _unknown(body, CHAT_FIELDS)
    turns, system = _messages(body)
    modalities = body.get("modalities") or ["text"]
    if not (isinstance(modalities, list) and all(isinstance(m, str) for m in modalities) and set(modalities) <= {"text", "image"} and len(set(modalities)) == len(modalities)):  # fmt: skip
        raise ApiError(400, "modalities must be ['text'], ['image'] or ['text', 'image']", "modalities")
    gen = _image_generation(body)
    if body.get("image_generation") is not None and "image" not in modalities:
        raise ApiError(400, "image_generation needs modalities to include image", "modalities")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    seed = _number(gen, "seed", "seed", "image_generation.", int)
    seed = seed if seed is not None else _number(body, "seed", "seed", "", int)
    mode = gen.get("mode", "interleaved" if set(modalities) == {"text", "image"} else "normal")
    if not isinstance(mode, str) or mode not in ("normal", "thinking", "interleaved"):
        raise ApiError(
            400,
            f"image_generation.mode {mode!r} is not normal, thinking or interleaved",
            "image_generation.mode",
        )
    request = ChatRequest(task="answer", turns=turns, system=system, seed=seed, stream=stream)
    request.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    request.prompt, request.images = turns[-1][1], turns[-1][2]
    if modalities == ["text"]:
        return _answer(request, body, (defaults or Defaults()).chat)
    if mode == "interleaved":
        return _interleave(request, body, gen, (defaults or Defaults()).interleave)
    if request.images:
        return _edit(request, body, gen, mode, (defaults or Defaults()).edit)
    request.thinking_text = "text" in modalities
    return _text_to_image(request, body, gen, mode, (defaults or Defaults()).image)


def _answer(request: ChatRequest, body: dict, base) -> ChatRequest:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    tokens = (
        _number({key: max_tokens}, key, "max_tokens", "", int) if max_tokens is not None else base.max_tokens
    )
    system = request.system if request.system is not None else base.system
    sampler = sampler_from(body, base.sampler)
    request.settings = ChatSettings(sampler=sampler, max_tokens=tokens, seed=request.seed, system=system)
    return request


def _text_to_image(request: ChatRequest, body: dict, gen: dict, mode: str, base, p: str = "image_generation.") -> ChatRequest:
    if not request.prompt.strip():
        raise ApiError(400, "a picture needs a non-empty prompt", "messages")
    sampler = sampler_from(body, base.sampler, "dllm_steps", gen, p)
    cfg = _number(gen, "cfg_scale", "cfg", p)
    length = _number(gen, "thinking_length", "thinking_length", p, int)
    thinking_steps = _number(gen, "thinking_steps", "thinking_steps", p, int)
    request.settings = dataclasses.replace(
        base,
        sampler=sampler,
        cfg=cfg if cfg is not None else base.cfg,
        thinking=mode == "thinking",
        thinking_sampler=dataclasses.replace(
            sampler, steps=thinking_steps or base.thinking_sampler.steps, sprint=None
        ),
        thinking_length=length or base.thinking_length,
    )
    request.decoder = decoder_from(gen, p)
    request.grid = _grid(gen, p, request.decoder.resolution_multiplier) or _grid(
        {"size": "1024x1024"}, "", request.decoder.resolution_multiplier
    )
    request.task = "image"
    return request


def _edit(request: ChatRequest, body: dict, gen: dict, mode: str, base, p: str = "image_generation.") -> ChatRequest:
    if mode == "thinking":
        raise ApiError(400, "thinking mode does not apply to editing", f"{p}mode")
    if not request.prompt.strip():
        raise ApiError(400, "editing needs a non-empty instruction", "messages")
    text = _number(gen, "cfg_text_scale", "cfg_text", p)
    if text is None and gen.get("cfg_scale") is not None:  # SGLang-Omni's legacy cfg_scale (1: off)
        legacy = _number(gen, "cfg_scale", "cfg", p)
        text = 0.0 if legacy == 1.0 else legacy
    image = _number(gen, "cfg_image_scale", "cfg_image", p)
    budget = _number(gen, "budget", "budget", p, int)
    request.settings = dataclasses.replace(
        base,
        sampler=sampler_from(body, base.sampler, "dllm_steps", gen, p),
        cfg_text=text if text is not None else base.cfg_text,
        cfg_image=image if image is not None else base.cfg_image,
        budget=budget or base.budget,
        fit=_flag(gen, "fit", p),
    )
    request.decoder = decoder_from(gen, p)
    request.grid = _grid(gen, p, request.decoder.resolution_multiplier)
    request.task = "edit"
    return request


def _interleave(request: ChatRequest, body: dict, gen: dict, base) -> ChatRequest:
    p = "image_generation."
    for key in ("width", "height", "image_w", "image_h", "size", "thinking_length", "thinking_steps", "budget", "fit"):  # fmt: skip
        if key in gen:
            raise ApiError(400, f"{p}{key} does not apply to an interleaved document (the model sizes its frames)", p + key)  # fmt: skip
    text = sampler_from(body, base.text_sampler)
    steps = _number(gen, "dllm_steps", "image_steps", p, int)  # as `llada interleave --image-steps`
    image = dataclasses.replace(text, steps=steps or base.image_sampler.steps)
    changes = {"text_sampler": text, "image_sampler": image}
    for key, field_, rule, kind in (("max_frames", "max_frames", "max_frames", int), ("text_max_new_tokens", "max_new_tokens", "max_new_tokens", int), ("max_image_tokens", "max_image_tokens", "max_image_tokens", int), ("cfg_scale", "cfg", "cfg", float), ("cfg_text_scale", "cfg_text", "cfg_text", float), ("cfg_image_scale", "cfg_image", "cfg_image", float)):  # fmt: skip
        value = _number(gen, key, rule, p, kind)
        if value is not None:
            changes[field_] = value
    request.settings = dataclasses.replace(base, **changes, system=request.system)
    request.decoder = decoder_from(gen, p)
    request.task = "interleave"
    return request


@dataclass
class ImagesRequest:
    """/v1/images/generations and /v1/images/edits, parsed."""

    prompt: str
    n: int
    settings: Any
    decoder: Any
    seed: int | None
    grid: tuple[int, int] | None
    response_format: str
    images: list = field(default_factory=list)


INTERLEAVE_ONLY = ("max_frames", "text_max_new_tokens", "max_image_tokens", "image_max_new_tokens")


def parse_images(fields: dict, images: list | None = None, defaults: Defaults | None = None) -> ImagesRequest:
    """OpenAI's image fields (JSON or multipart) plus llada's own (`image_generation`'s, at the top level),
    read by the same builders as a chat completion's picture or edit; `images` for edits."""
    _unknown(fields, IMAGES_FIELDS, neutral_only={k: v for k, v in NEUTRAL.items() if k != "n"})
    prompt = _text(fields, "prompt", required=True)
    n = _number(fields, "n", "num_images", "", int) or 1
    if n > MAX_N:
        raise ApiError(400, f"n {n} is more than {MAX_N}", "n")
    fmt = fields.get("response_format") or "b64_json"
    if fmt not in ("b64_json", "url"):
        raise ApiError(400, "response_format must be b64_json or url", "response_format")
    if (fields.get("output_format") or "png") != "png":
        raise ApiError(400, "output_format must be png", "output_format")
    for key in INTERLEAVE_ONLY:
        if key in fields:
            raise ApiError(400, f"{key} applies to interleaved documents (chat completions)", key)
    gen = {k: v for k, v in fields.items() if k in IMAGE_GENERATION_FIELDS}
    if fields.get("num_inference_steps") is not None:
        gen["decoder_steps"] = fields["num_inference_steps"]
    if fields.get("guidance_scale") is not None:
        gen.setdefault("cfg_text_scale" if images else "cfg_scale", fields["guidance_scale"])
    mode = gen.get("mode", "normal")
    if not isinstance(mode, str) or mode not in ("normal", "thinking"):
        raise ApiError(400, f"mode {mode!r} is not normal or thinking", "mode")
    seed = _number(fields, "seed", "seed", "", int)
    request = ChatRequest(task="image", turns=[("user", prompt, list(images or []))], system=None, seed=seed, stream=False)  # fmt: skip
    request.prompt, request.images = prompt, list(images or [])
    base = defaults or Defaults()
    _image_generation({"image_generation": gen}, "")  # format png, cfg_rescale 0; fields at the top here
    if images:
        _edit(request, fields, gen, mode, base.edit, "")
    else:
        _text_to_image(request, fields, gen, mode, base.image, "")
    return ImagesRequest(prompt, n, request.settings, request.decoder, seed, request.grid, fmt, request.images)


# -- responses ----------------------------------------------------------------------------------------


def png_bytes(result) -> bytes:
    """The picture of an ImageResult as PNG bytes with its generation record (as the CLI writes it)."""
    from ..io.imagefiles import png_bytes as encode

    return encode(result.image, result.record.to_json())


def image_object(result, index: int, request_id: str) -> dict:
    """One picture as SGLang-Omni's `images[]` entry, plus llada's record, codes and grid."""
    w, h = result.image.size
    return {
        "id": f"image-{request_id}-{index}",
        "data": base64.b64encode(png_bytes(result)).decode(),
        "format": "png",
        "width": w,
        "height": h,
        "record": result.record.to_json(),
        "codes": list(result.codes.codes),
        "grid": list(result.codes.grid),
    }


def completion(request_id: str, model: str, message: dict, finish_reason: str, usage: dict | None) -> dict:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }


def chunk(request_id: str, model: str, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **extra,
    }


def new_id() -> str:
    return uuid.uuid4().hex[:24]
