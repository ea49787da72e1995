"""`llada generate`: text to images, one prompt, several, or a prompts file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..io.outputs import DEFAULT_NAME
from ..limits import check_flags, check_size, parse_size
from ..weights.registry import DEFAULT_MODEL
from .options import (
    DecoderFlags,
    JsonOpt,
    ModelOpt,
    OutputFlags,
    RemoteFlags,
    RunFlags,
    SamplerFlags,
    SeedOpt,
    SizeOpt,
    decoder_options,
    output_options,
    remote_options,
    run_options,
    sampler_options,
)


@sampler_options(steps=8)
@run_options(images=False)
@decoder_options()
@output_options(DEFAULT_NAME)
@remote_options(batch=True)
def generate(
    prompt: Annotated[list[str] | None, typer.Argument(help="One or more prompts.")] = None,
    model: ModelOpt = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option("--prompts-file", "--from", help="Prompts: .txt (one per line), .jsonl or .csv."),
    ] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Images per prompt.")] = 1,
    size: SizeOpt = None,
    width: Annotated[int | None, typer.Option("--width")] = None,
    height: Annotated[int | None, typer.Option("--height")] = None,
    aspect: Annotated[str | None, typer.Option("--aspect", help="W:H near one megapixel, e.g. 16:9.")] = None,
    cfg: Annotated[
        float | None, typer.Option("--cfg", help="Guidance scale; 1.0 turns it off [2.0].")
    ] = None,
    seed: SeedOpt = None,
    thinking: Annotated[
        bool | None, typer.Option("--thinking/--no-thinking", help="Reason in text before drawing.")
    ] = None,
    thinking_steps: Annotated[
        int, typer.Option("--thinking-steps", help="Steps per block of reasoning.")
    ] = 32,
    thinking_length: Annotated[int, typer.Option("--thinking-length", help="Most reasoning tokens.")] = 4096,
    params_from: Annotated[
        Path | None, typer.Option("--params-from", help="Reuse prompt, seed and settings of a llada image.")
    ] = None,
    json_out: JsonOpt = False,
    sampler: SamplerFlags = None,
    run: RunFlags = None,
    decoding: DecoderFlags = None,
    out: OutputFlags = None,
    remote: RemoteFlags = None,
) -> None:
    """Generate images from text: one prompt, several, or a prompts file.

    Examples:  llada generate "a red fox in the snow" --model tiny --size 256x256
               llada generate --prompts-file prompts.jsonl --out-dir out -n 2 --json
               llada generate --params-from out/0000-42-a-red-fox.png --decoder normal
               llada generate --prompts-file prompts.txt --server http://gpu-box:8000 --parallel 4
    """
    from ..batch import RemoteTextToImageJob, TextToImageJob, plan_items
    from ..memory.plan import PlanRequest
    from .batches import batch_options, batch_seed, check_outputs, manifest_for, run_batch
    from .plan import start_engine

    check_flags(locals())
    server = remote.connect(run)
    record = _params_record(params_from)
    settings = _image_settings(sampler, cfg, thinking, thinking_steps, thinking_length, record)
    decoder_settings = decoding.settings(record.decoder_settings() if record else None)
    w, h = _size(size, width, height, aspect, record)
    what = f"--aspect {aspect} gives" if aspect else "size"
    check_size(w, h, decoder_settings.resolution_multiplier, what)  # a bad size: exit 2 before any work
    entries = _entries(prompt, prompts_file, record)
    options, model_given = run.options(), model
    model = model if model is not None else (record.model if record else None) or DEFAULT_MODEL
    plan = PlanRequest(
        command="generate", model=model, quant=options.quant, decoder_quant=options.decoder_quant,
        size=(w, h), decoder=decoder_settings.mode, max_vram=options.max_vram,
    )  # fmt: skip
    if run.dry_run:
        start_engine(model, options, plan, json_out, dry=True)
    check_outputs(out, len(entries) * num_images)
    manifest = manifest_for(out, len(entries) * num_images)
    base_seed = batch_seed(
        seed if seed is not None else (record.seed if record else None), manifest, out.resume
    )
    items = plan_items(entries, num_images, base_seed, w, h)
    if server is not None:
        engine, job = None, RemoteTextToImageJob(server.serving(model_given), settings, decoder_settings)
    else:
        engine = start_engine(model, options, plan)
        job = TextToImageJob(engine, settings, decoder_settings)
    options = batch_options(out, decoder_settings)
    run_batch(engine, job, options, out, items, manifest, json_out, "image(s)", remote.parallel)



def _params_record(path: Path | None):
    """The generation record of a llada image, for --params-from (its fields checked)."""
    if path is None:
        return None
    from ..io.imagefiles import read_record
    from ..records import GenerationRecord

    return GenerationRecord.from_json(read_record(path), f"--params-from {path}: its record's")


def _entries(prompts: list[str] | None, prompts_file: Path | None, record) -> list:
    from ..io.promptfiles import Entry, read_prompts_file

    if prompts and not all(p.strip() for p in prompts):
        raise UsageError("a prompt is empty", 'llada generate "a red fox in the snow"')
    if prompts and prompts_file:
        raise UsageError("give prompts as arguments or with --prompts-file, not both")
    if prompts_file:
        return read_prompts_file(prompts_file)
    prompts = list(prompts or []) or ([record.prompt] if record else [])
    if not prompts:
        raise UsageError("no prompt given", 'llada generate "a red fox in the snow"')
    return [Entry({"prompt": p}) for p in prompts]


def _size(size: str | None, width: int | None, height: int | None, aspect: str | None, record):
    """(width, height) from --size, --aspect or --width/--height, else the record's, else 1024x1024."""
    from ..limits import size_for_aspect

    if sum(x is not None for x in (size, aspect)) + (width is not None or height is not None) > 1:
        raise UsageError("choose one of --size, --aspect or --width/--height")
    if size:
        return parse_size(size)
    if aspect:
        return size_for_aspect(aspect)
    return width or (record.width if record else 1024), height or (record.height if record else 1024)


def _image_settings(sampler: SamplerFlags, cfg, thinking, thinking_steps, thinking_length, record):
    """Flags given win over a --params-from record, which wins over the defaults."""
    from ..settings import ImageSettings

    base = record.image_settings(ImageSettings()) if record else ImageSettings()
    main = sampler.settings(base.sampler)
    return replace(
        base,
        sampler=main,
        cfg=cfg if cfg is not None else base.cfg,
        thinking=thinking if thinking is not None else base.thinking,
        thinking_sampler=replace(main, steps=thinking_steps, sprint=None),
        thinking_length=thinking_length,
    )
