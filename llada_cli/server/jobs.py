"""What each request does on the engine, run in the worker thread: it returns the response body (or
hands stream events to the waiting response) and counts the forward passes it spent."""

from __future__ import annotations

import base64
from dataclasses import replace

from ..limits import seed_or_drawn
from .protocol import ChatRequest, ImagesRequest, chunk, completion, image_object, png_bytes
from .worker import Job


def _seed(seed: int | None) -> int:
    return seed_or_drawn(seed)


def _progress(job: Job, stage: str):
    """A sampler step callback: checks for cancellation, and tells a streaming client where it is."""

    def on_step(event) -> None:
        job.emit(("progress", {"stage": stage, "block_start": event.block_start, "step": event.step}))

    return on_step


def _decode_progress(job: Job):
    def on_decode(i: int, n: int) -> None:
        job.emit(("progress", {"stage": "decoder", "step": i, "steps": n}))

    return on_decode


class ChatJob:
    def __init__(self, engine, request: ChatRequest, request_id: str):
        self.engine, self.request, self.id = engine, request, request_id
        self.passes = 0

    def __call__(self, job: Job) -> dict:
        return getattr(self, self.request.task)(job)

    # -- tasks ------------------------------------------------------------------------------------------

    def answer(self, job: Job) -> dict:
        from ..inputs.prompts import Turn
        from ..pipelines.chat import stop_ids
        from ..pipelines.textstream import BlockStreamer, TokenCanvas

        r, engine = self.request, self.engine
        turns = []
        for role, text, images in r.turns:
            blocks = [e.block for e in engine.encode(images)] if images else []
            turns.append(Turn(role, [*blocks, text]))
        settings = replace(r.settings, seed=_seed(r.settings.seed))
        tok = engine.tokenizer
        streamer = BlockStreamer(
            TokenCanvas(tok.ids["mask"], stop_ids(tok)), tok.decode, lambda t: job.emit(("text", t))
        )

        def on_step(event) -> None:
            job.check()
            if r.stream:
                streamer.on_step(event)

        result = engine.answer(turns, settings, on_step)
        self.passes = result.stats.forward_passes
        if r.stream:
            rest = streamer.rest(result.answer)
            if rest:
                job.emit(("text", rest))
        finish = "length" if result.generated_tokens >= settings.max_tokens else "stop"
        usage = _usage(result.prompt_tokens, result.generated_tokens)
        message = {"role": "assistant", "content": result.answer}
        return completion(self.id, engine.label, message, finish, usage) | {"llada": {"seed": result.seed}}

    def image(self, job: Job) -> dict:
        r = self.request
        seed = _seed(r.seed)
        result = self.engine.text_to_image(
            r.prompt, grid=r.grid, settings=r.settings, decoder=r.decoder, seed=seed,
            on_step=_progress(job, "backbone"), on_decode=_decode_progress(job),
        )  # fmt: skip
        return self._pictures([result], result.codes.thinking if r.thinking_text else None)

    def edit(self, job: Job) -> dict:
        r = self.request
        result = self.engine.edit(
            r.images, r.prompt, settings=r.settings, decoder=r.decoder, seed=_seed(r.seed), grid=r.grid,
            on_step=_progress(job, "backbone"), on_decode=_decode_progress(job),
        )  # fmt: skip
        return self._pictures([result], None)

    def interleave(self, job: Job) -> dict:
        from ..records import interleave_settings_record

        r, engine = self.request, self.engine
        sources = [e.record() for e in engine.encode(r.images)] if r.images else []
        settings = interleave_settings_record(r.settings) | {"images": sources}  # as the CLI records it
        parts, images = [], []

        def on_segment(segment, _full) -> None:
            job.check()
            if segment.kind == "text":
                parts.append({"type": "text", "text": segment.text})
                job.emit(("text", segment.text))
            elif segment.kind == "image":
                frame = engine.frame(segment, r.prompt, settings, r.decoder, _decode_progress(job))
                entry = image_object(frame, len(images), self.id)
                images.append(entry)
                parts.append({"type": "image_ref", "image_id": entry["id"]})
                job.emit(("image", entry))
            else:  # a note the document ends with (a botched image header, no room left)
                note = f"[llada: {segment.text}]"
                parts.append({"type": "text", "text": note, "llada_kind": segment.kind})
                job.emit(("text", note))

        progress = _progress(job, "text")

        def on_step(event) -> None:  # text and image phases alike: one forward pass per step
            self.passes += 1
            progress(event)

        doc = engine.interleave(r.prompt, r.settings, _seed(r.seed), r.images, on_segment, on_step)
        message = {"role": "assistant", "content": parts, "images": images}
        finish = {"stop": "stop", "max_frames": "max_frames"}.get(doc.finish_reason, "length")
        reply = completion(self.id, engine.label, message, finish, None)
        return reply | {"llada": {"finish_reason": doc.finish_reason, "tokens": doc.tokens}}

    def _pictures(self, results: list, content: str | None) -> dict:
        self.passes = sum(x.codes.stats.forward_passes for x in results)
        images = [image_object(x, i, self.id) for i, x in enumerate(results)]
        message = {"role": "assistant", "content": content, "images": images}
        message["image"] = {"data": images[0]["data"], "format": "png"}  # SGLang-Omni's first shape
        return completion(self.id, self.engine.label, message, "stop", None)


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ImagesJob:
    """/v1/images/generations and /v1/images/edits: n pictures, seeds seed, seed + 1, ..."""

    def __init__(self, engine, request: ImagesRequest, request_id: str):
        self.engine, self.request, self.id = engine, request, request_id
        self.passes = 0

    def __call__(self, job: Job) -> dict:
        import time

        r, data = self.request, []
        base = _seed(r.seed)
        for i in range(r.n):
            seed = (base + i) % (1 << 64)  # seeds past the largest wrap round
            on_step, on_decode = _progress(job, "backbone"), _decode_progress(job)
            if r.images:
                result = self.engine.edit(
                    r.images, r.prompt, settings=r.settings, decoder=r.decoder, seed=seed, grid=r.grid,
                    on_step=on_step, on_decode=on_decode,
                )  # fmt: skip
            else:
                result = self.engine.text_to_image(
                    r.prompt, grid=r.grid, settings=r.settings, decoder=r.decoder, seed=seed,
                    on_step=on_step, on_decode=on_decode,
                )  # fmt: skip
            self.passes += result.codes.stats.forward_passes
            b64 = base64.b64encode(png_bytes(result)).decode()
            item = (
                {"b64_json": b64}
                if r.response_format == "b64_json"
                else {"url": f"data:image/png;base64,{b64}"}
            )
            data.append(item | {"revised_prompt": None, "seed": seed})
        return {"created": int(time.time()), "data": data}


def stream_chunks(request_id: str, model: str, event) -> dict:
    """One SSE chunk for a job event: text as content, a finished image as `images`, progress aside."""
    kind, value = event
    if kind == "text":
        return chunk(request_id, model, {"content": value})
    if kind == "image":
        return chunk(request_id, model, {"images": [value]})
    return chunk(request_id, model, {}, llada_progress=value)
