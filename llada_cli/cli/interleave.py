"""`llada interleave`: a document of text and generated images, written as the model goes."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..io.files import display_path, ensure_writable_dir, read_stdin_text
from ..limits import check_flags
from ..weights.registry import DEFAULT_MODEL
from .options import (
    AlphaOpt,
    CompileOpt,
    Confidence,
    ConfidenceOpt,
    Decoder,
    DecoderQuant,
    DecoderQuantOpt,
    DeviceOpt,
    DryRunOpt,
    ForceOpt,
    ImageKeepOpt,
    ImagesOpt,
    JsonOpt,
    KeepRatioOpt,
    MaxVramOpt,
    ModelOpt,
    Quant,
    QuantOpt,
    SeedOpt,
    SprintOpt,
    SystemOpt,
    TextKeepOpt,
    Transparency,
    TransparencyOpt,
    VQPrecision,
    VQPrecisionOpt,
    WarmupOpt,
    show_quant_summary,
    sprint_settings,
)
from .output import write_stdout
from .plan import dry_run
from .runtime import output


def interleave(
    prompt: Annotated[
        str | None, typer.Argument(help="What to write and illustrate; stdin when piped.")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Folder [a new llada-interleave-TIME].")
    ] = None,
    image: ImagesOpt = None,
    system: SystemOpt = None,
    max_frames: Annotated[int, typer.Option("--max-frames", help="Most images in the document.")] = 10,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Most tokens per text run [1024].")
    ] = 1024,
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per block of text.")] = 32,
    image_steps: Annotated[
        int, typer.Option("--image-steps", help="Denoising steps per block of codes.")
    ] = 32,
    cfg: Annotated[
        float, typer.Option("--cfg", help="Guidance for the first image (0: use --cfg-text).")
    ] = 0.0,
    cfg_text: Annotated[float, typer.Option("--cfg-text")] = 7.5,
    cfg_image: Annotated[float, typer.Option("--cfg-image")] = 1.5,
    max_image_tokens: Annotated[int, typer.Option("--max-image-tokens")] = 4096,
    decoder: Annotated[Decoder, typer.Option("--decoder")] = Decoder.turbo,
    decoder_steps: Annotated[int | None, typer.Option("--decoder-steps")] = None,
    resolution_multiplier: Annotated[int, typer.Option("--resolution-multiplier")] = 2,
    seed: SeedOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    max_vram: MaxVramOpt = None,
    dry: DryRunOpt = False,
    compile: CompileOpt = False,
    quant: QuantOpt = Quant.none,
    decoder_quant: DecoderQuantOpt = DecoderQuant.none,
    sprint: SprintOpt = False,
    keep_ratio: KeepRatioOpt = 0.5,
    image_keep_ratio: ImageKeepOpt = None,
    text_keep_ratio: TextKeepOpt = None,
    confidence_alpha: AlphaOpt = 0.5,
    cache_warmup_steps: WarmupOpt = 1,
    confidence: ConfidenceOpt = Confidence.low,
    vq_precision: VQPrecisionOpt = VQPrecision.bf16,
    alpha: TransparencyOpt = Transparency.drop,
    json_out: JsonOpt = False,
) -> None:
    """Write a document that interleaves text and generated images.

    Examples:  llada interleave "Write a short illustrated guide to making tea" --model tiny
               llada interleave "A picture book about a fox" --out-dir fox --json | jq .event
    """
    from ..io.images import load_image
    from ..pipelines.document import DocumentWriter
    from ..pipelines.interleave import Interleaver, InterleaveSettings
    from .generate import _image_pipeline

    show_quant_summary(quant, decoder_quant)
    check_flags(locals())  # every value through its rule (llada_cli.limits), before anything else
    if dry:
        quants = (quant.value, decoder_quant.value)
        dry_run(
            "interleave", model, device, json_out, *quants, 1024, decoder.value, max_vram, len(image or [])
        )
    if prompt is None and not sys.stdin.isatty():
        prompt = read_stdin_text()
    if not prompt or not prompt.strip():
        raise UsageError(
            "no prompt given", 'llada interleave "Write a short illustrated guide to making tea"'
        )
    folder = out_dir or Path(time.strftime("llada-interleave-%Y%m%d-%H%M%S"))
    if (folder / "document.md").exists() and not force:
        raise UsageError(f"{folder} already holds a document", "choose another --out-dir, or pass --force")
    ensure_writable_dir(folder)
    loaded = [load_image(src) for src in image or []]
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
    sprint_cfg = sprint_settings(
        sprint,
        keep_ratio,
        image_keep_ratio,
        text_keep_ratio,
        confidence_alpha,
        cache_warmup_steps,
        confidence,
    )
    settings = InterleaveSettings(
        max_frames,
        max_new_tokens,
        steps,
        image_steps,
        32,
        0.95,
        cfg,
        cfg_text,
        cfg_image,
        max_image_tokens,
        system,
        sprint=sprint_cfg,
    )
    pipe, _ = _image_pipeline(
        model,
        device,
        decoder.value,
        "interleave",
        quant,
        decoder_quant,
        max_vram=max_vram,
        compile=compile,
        image_precision=vq_precision.value,
        alpha=alpha.value,
    )
    encoded = pipe.encoder.encode(loaded) if loaded else []
    blocks = [e.block for e in encoded]
    writer = DocumentWriter(
        folder,
        pipe.decoder,
        prompt,
        pipe.label,
        dataclasses.asdict(settings) | {"decoder": decoder.value, "images": [e.record() for e in encoded]},
        seed,
        decoder_steps,
        resolution_multiplier,
    )
    view = _Renderer(json_out, folder, pipe.generator.tokenizer)
    try:
        doc = Interleaver(pipe.generator).run(
            prompt,
            settings,
            seed,
            blocks,
            on_segment=lambda s, _: view.segment(writer.add(s)),
            on_step=view.step,
        )
    finally:
        view.stop()
    writer.finish_reason = doc.finish_reason
    writer.save()
    view.done(doc, folder, [e.record() for e in encoded])


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
                from .live import BlockStreamer, TokenCanvas

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
            from .live import LiveView, TokenCanvas

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
