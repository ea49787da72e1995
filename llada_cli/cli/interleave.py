"""`llada interleave`: a document of text and generated images, written as the model goes."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..io.files import display_path, ensure_writable_dir, read_stdin_text
from ..limits import check_flags, seed_or_drawn
from ..weights.registry import DEFAULT_MODEL
from .options import (
    DecoderFlags,
    ForceOpt,
    ImagesOpt,
    JsonOpt,
    ModelOpt,
    RemoteFlags,
    RunFlags,
    SamplerFlags,
    SeedOpt,
    SystemOpt,
    decoder_options,
    remote_options,
    run_options,
    sampler_options,
)
from .output import write_stdout
from .runtime import output


@sampler_options(steps=32)
@run_options()
@decoder_options()
@remote_options(batch=False)
def interleave(
    prompt: Annotated[
        str | None, typer.Argument(help="What to write and illustrate; stdin when piped.")
    ] = None,
    model: ModelOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Folder [a new llada-interleave-TIME].")
    ] = None,
    image: ImagesOpt = None,
    system: SystemOpt = None,
    max_frames: Annotated[int, typer.Option("--max-frames", help="Most images in the document.")] = 10,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Most tokens per text run [1024].")
    ] = 1024,
    image_steps: Annotated[
        int, typer.Option("--image-steps", help="Denoising steps per block of codes.")
    ] = 32,
    cfg: Annotated[
        float, typer.Option("--cfg", help="Guidance for the first image (0: use --cfg-text).")
    ] = 0.0,
    cfg_text: Annotated[float, typer.Option("--cfg-text")] = 7.5,
    cfg_image: Annotated[float, typer.Option("--cfg-image")] = 1.5,
    max_image_tokens: Annotated[int, typer.Option("--max-image-tokens")] = 4096,
    seed: SeedOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    sampler: SamplerFlags = None,
    run: RunFlags = None,
    decoding: DecoderFlags = None,
    remote: RemoteFlags = None,
) -> None:
    """Write a document that interleaves text and generated images.

    Examples:  llada interleave "Write a short illustrated guide to making tea" --model tiny
               llada interleave "A picture book about a fox" --out-dir fox --json | jq .event
    """
    from dataclasses import replace

    from ..io.documents import DocumentWriter
    from ..io.images import load_image
    from ..memory.plan import PlanRequest
    from ..records import interleave_settings_record
    from ..settings import InterleaveSettings
    from .plan import start_engine

    check_flags(locals())
    server = remote.connect(run)
    text = sampler.settings()
    settings = InterleaveSettings(
        text_sampler=text, image_sampler=replace(text, steps=image_steps), max_frames=max_frames,
        max_new_tokens=max_new_tokens, cfg=cfg, cfg_text=cfg_text, cfg_image=cfg_image,
        max_image_tokens=max_image_tokens, system=system,
    )  # fmt: skip
    decoder_settings, options = decoding.settings(), run.options()
    given_model, model = model, model or DEFAULT_MODEL
    plan = PlanRequest(
        command="interleave", model=model, quant=options.quant, decoder_quant=options.decoder_quant,
        decoder=decoder_settings.mode, max_vram=options.max_vram, images=len(image or []),
    )  # fmt: skip
    if run.dry_run:
        start_engine(model, options, plan, json_out, dry=True)
    prompt = _prompt(prompt)
    folder = _folder(out_dir, force)
    with _claimed(folder, force):
        loaded = [load_image(src) for src in image or []]
        seed = seed_or_drawn(seed)
        if server is not None:
            _remote(
                server.serving(given_model), prompt, settings, decoder_settings, seed, loaded, folder, json_out
            )
            return
        engine = start_engine(model, options, plan)
        images = [e.record() for e in engine.encode(loaded)] if loaded else []
        record = interleave_settings_record(settings) | {"images": images}
        writer = DocumentWriter(folder, prompt=prompt, model=engine.label, settings=record, seed=seed)
        view = _Renderer(json_out, folder, engine.tokenizer)
        frames = _FrameDecoder(engine, writer, decoder_settings, prompt, record)
        try:
            doc = engine.interleave(
                prompt,
                settings,
                seed,
                loaded,
                on_segment=lambda s, _: view.segment(frames.add(s)),
                on_step=view.step,
            )
        finally:
            view.stop()
        writer.finish_reason = doc.finish_reason
        writer.save()
        view.done(doc, folder, images)


def _remote(server, prompt, settings, decoder, seed: int, loaded: list, folder: Path, json_out: bool) -> None:
    """The document from a server: asked in one request, then written and shown as a local one is."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from ..io.documents import DocumentWriter
    from ..pipelines.interleave import Segment
    from ..records import interleave_settings_record

    out = output()
    images = [i.record() for i in loaded]
    record = interleave_settings_record(settings) | {"images": images}
    busy = out.console.status(f"writing on {server.url}") if out.interactive else nullcontext()
    with busy:
        doc = server.interleave(prompt, settings, decoder, seed, loaded)
    writer = DocumentWriter(folder, prompt=prompt, model=server.label, settings=record, seed=seed)
    view = _Renderer(json_out, folder, None)
    for kind, value in doc.parts:
        if kind in ("text", "error"):
            view.segment(writer.add(Segment(kind, value)))
            continue
        r = value.record
        segment = Segment("image", frame=r.frame, grid=r.grid, codes=value.codes or [], seed=r.seed, guidance=r.guidance)  # fmt: skip
        view.segment(writer.add(segment, value.image, r.to_json()))
    writer.finish_reason = doc.finish_reason
    writer.save()
    frames = sum(kind == "image" for kind, _ in doc.parts)
    view.done(SimpleNamespace(frames=frames, finish_reason=doc.finish_reason, tokens=None), folder, images)



def _prompt(prompt: str | None) -> str:
    if prompt is None and not sys.stdin.isatty():
        prompt = read_stdin_text()
    if not prompt or not prompt.strip():
        raise UsageError(
            "no prompt given", 'llada interleave "Write a short illustrated guide to making tea"'
        )
    return prompt


def _folder(out_dir: Path | None, force: bool) -> Path:
    """--out-dir, or a new folder named for the time (-2, -3, ... when two runs start in one second)."""
    folder = out_dir
    if folder is None:
        stem, n = Path(time.strftime("llada-interleave-%Y%m%d-%H%M%S")), 1
        folder = stem
        while os.path.lexists(folder):
            n += 1
            folder = stem.with_name(f"{stem.name}-{n}")
    if (folder / "document.md").exists() and not force:
        raise UsageError(f"{folder} already holds a document", "choose another --out-dir, or pass --force")
    return ensure_writable_dir(folder)


@contextmanager
def _claimed(folder: Path, force: bool):
    """The document's name reserved for this run, as every output name is (two runs never write one
    folder at once); a folder this run made and left empty goes again."""
    from ..io.outputs import Reservations

    names = Reservations(folder, force)
    if not names.claim(folder / "document.md"):
        raise UsageError(f"another run is writing a document in {display_path(folder)}", "choose another --out-dir")  # fmt: skip
    try:
        yield
    finally:
        names.release_all()


class _FrameDecoder:
    """Decodes each finished frame and hands it, with its record, to the document writer."""

    def __init__(self, engine, writer, decoder, prompt: str, settings: dict):
        self.engine, self.writer, self.decoder = engine, writer, decoder
        self.prompt, self.settings = prompt, settings

    def add(self, segment) -> dict:
        if segment.kind != "image":
            return self.writer.add(segment)
        frame = self.engine.frame(segment, self.prompt, self.settings, self.decoder)
        seconds = frame.timings.decoder + frame.timings.vae
        return self.writer.add(segment, frame.image, frame.record.to_json(), seconds)


class _Renderer:
    """Events as JSON Lines, or the document as Markdown on stdout with status on stderr."""

    def __init__(self, json_out: bool, folder: Path, tokenizer):
        self.out, self.json_out, self.folder, self.tok = output(), json_out, folder, tokenizer
        self.live = None
        self.streamer = None  # streams text blocks when there is no live view

    def step(self, event) -> None:
        """Text phases only report steps: the live view opens on a phase's first step, closes at its end;
        without a terminal (or with --json) each finished block's text is written as it is decided."""
        if self.json_out or not self.out.interactive:
            if self.streamer is None:
                from ..pipelines.textstream import BlockStreamer, TokenCanvas

                canvas = TokenCanvas(self.tok.ids["mask"], (self.tok.ids["eos"], self.tok.ids["boi"]))
                emit = (
                    (lambda t: self.out.json({"event": "text_delta", "text": t}))
                    if self.json_out
                    else write_stdout
                )
                self.streamer = BlockStreamer(canvas, self.tok.decode, emit)
            self.streamer.on_step(event)
            return
        if self.live is None:
            from ..pipelines.textstream import TokenCanvas
            from .live import LiveView

            stops = (self.tok.ids["eos"], self.tok.ids["boi"])
            canvas = TokenCanvas(self.tok.ids["mask"], stops)
            self.live = LiveView(self.out.console, canvas, self.tok.decode).__enter__()
        self.live.on_step(event)

    def stop(self) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def segment(self, entry: dict) -> None:
        self.stop()
        if self.json_out:
            if self.streamer and entry["kind"] == "text":
                self.streamer.rest(entry["text"])  # the deltas are done: the event carries the whole text
            self.out.json(
                {"event": entry["kind"], **entry}
                | ({"path": str(self.folder / entry["path"])} if entry["kind"] == "image" else {})
            )
        elif entry["kind"] == "text":
            self.out.data(self.streamer.rest(entry["text"]) if self.streamer else entry["text"])
        elif entry["kind"] == "image":
            path = self.folder / entry["path"]
            self.out.data(f"![frame {entry['frame']}]({display_path(path)})")
            self.out.info(f"frame {entry['frame']}: {entry['grid'][0]}x{entry['grid'][1]} codes -> {path}")
        else:
            self.out.warn(entry["text"])

    def done(self, doc, folder: Path, images: list[dict]) -> None:
        if self.json_out:
            self.out.json(
                {
                    "event": "done",
                    "frames": doc.frames,
                    "finish_reason": doc.finish_reason,
                    "tokens": doc.tokens,
                    "document": str(folder / "document.md"),
                    "images": images,
                }
            )
        else:
            self.out.info(
                f"{doc.frames} frame(s), stopped: {doc.finish_reason}; document: {folder / 'document.md'}"
            )
