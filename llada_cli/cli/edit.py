"""`llada edit`: change one image (or several references) with an instruction; batches too."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..io.outputs import DEFAULT_NAME
from ..limits import check_flags
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
from .runtime import output


def _expand(sources: list[str]) -> tuple[list[str], bool]:
    """Paths as given; a glob pattern that names no file expands to its matches (and means --each)."""
    out, globbed = [], False
    for src in sources:
        if any(c in src for c in "*?[") and not Path(src).exists():
            matches = sorted(glob.glob(src))
            if not matches:
                raise UsageError(f"--image {src!r} matches no file")
            out += matches
            globbed = True
        else:
            out.append(src)
    return out, globbed


def split_edit_args(args: list[str], instruction: str | None) -> tuple[list[str], str | None]:
    """`llada edit [IMAGE]... INSTRUCTION`: with --instruction every positional is an image; else the
    last one is the instruction. A lone positional that names a file is an image without an instruction."""
    if instruction is not None:
        return args, instruction
    if not args:
        return [], None
    if len(args) == 1 and Path(args[0]).is_file():
        raise UsageError(
            f"{args[0]} is an image; what should change?", f'llada edit {args[0]} "make the sky purple"'
        )
    return args[:-1], args[-1]


@sampler_options(steps=8)
@run_options()
@decoder_options()
@output_options(DEFAULT_NAME)
@remote_options(batch=True)
def edit(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[IMAGE]... INSTRUCTION", help="Source images (or --image), then what to change."
        ),
    ] = None,
    image: Annotated[
        list[str] | None,
        typer.Option("--image", "-i", help="Source image (repeatable; globs edit each match)."),
    ] = None,
    instruction: Annotated[str | None, typer.Option("--instruction", help="What to change.")] = None,
    edits_file: Annotated[
        Path | None, typer.Option("--edits-file", "--from", help="JSONL of {image, instruction, ...} edits.")
    ] = None,
    each: Annotated[bool, typer.Option("--each", help="Edit every --image on its own.")] = False,
    model: ModelOpt = None,
    cfg_text: Annotated[float, typer.Option("--cfg-text", help="Guidance on the instruction.")] = 4.0,
    cfg_image: Annotated[float, typer.Option("--cfg-image", help="Guidance on the source image.")] = 0.0,
    budget: Annotated[int, typer.Option("--budget", help="Crop pixel budget: 512, 768 or 1024.")] = 512,
    fit: Annotated[
        bool, typer.Option("--fit", help="Scale the source to the crop size instead of cutting a window.")
    ] = False,
    size: SizeOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    sampler: SamplerFlags = None,
    run: RunFlags = None,
    decoding: DecoderFlags = None,
    out: OutputFlags = None,
    remote: RemoteFlags = None,
) -> None:
    """Edit images with an instruction: one source, several references, or a batch.

    Examples:  llada edit photo.png "make the sky purple" --model tiny
               llada edit --image photo.png --instruction "make the sky purple"
               llada edit -i a.png -i b.png "put the cat from the second image on the sofa"
               llada edit -i "shots/*.png" "make it black and white" --out-dir bw
               llada edit --edits-file edits.jsonl --out-dir out --resume
    """
    from ..batch import EditJob, RemoteEditJob
    from ..memory.plan import PlanRequest
    from ..settings import EditSettings
    from .batches import batch_options, batch_seed, check_outputs, manifest_for, run_batch
    from .plan import start_engine

    check_flags(locals())
    server = remote.connect(run)
    settings = EditSettings(
        sampler=sampler.settings(EditSettings().sampler), cfg_text=cfg_text, cfg_image=cfg_image, budget=budget, fit=fit
    )  # fmt: skip
    decoder_settings, options = decoding.settings(), run.options()
    model_given, model = model, model or DEFAULT_MODEL
    plan = PlanRequest(
        command="edit", model=model, quant=options.quant, decoder_quant=options.decoder_quant,
        size=(budget, budget), decoder=decoder_settings.mode, max_vram=options.max_vram,
    )  # fmt: skip
    if run.dry_run:
        start_engine(model, options, plan, json_out, dry=True)
    entries = _entries(args, image, instruction, edits_file, each)
    check_outputs(out, len(entries))
    manifest = manifest_for(out, len(entries))
    items = _items(entries, batch_seed(seed, manifest, out.resume))
    grid = _grid(size, decoder_settings.resolution_multiplier)
    if settings.sampler.sprint is not None and cfg_image > 0:
        output().warn("--sprint does not apply with image guidance (--cfg-image > 0); editing runs exactly")
    if server is not None:
        engine, job = None, RemoteEditJob(server.serving(model_given), settings, decoder_settings, grid)
    else:
        engine = start_engine(model, options, plan)
        job = EditJob(engine, settings, decoder_settings, grid)
    options = batch_options(out, decoder_settings)
    run_batch(engine, job, options, out, items, manifest, json_out, "edit(s)", remote.parallel)



def _entries(args, image, instruction, edits_file, each) -> list:
    """The edits: from --edits-file, or the images and the instruction (--each or a glob: one per image)."""
    from ..io.images import load_image
    from ..io.promptfiles import Entry, read_edits_file

    positional, text = split_edit_args(args or [], instruction)
    image = positional + (image or [])
    if edits_file:
        if image or text:
            raise UsageError("--edits-file holds the images and instructions; do not pass them too")
        return read_edits_file(edits_file)
    if not image:
        raise UsageError("no image to edit", 'llada edit --image photo.png "make the sky purple"')
    if not text or not text.strip():
        raise UsageError("no instruction", 'llada edit --image photo.png "make the sky purple"')
    paths, globbed = _expand(image)
    for p in paths:
        load_image(p)  # a missing, unreadable or non-image file fails here, before any model loads
    groups = [[p] for p in paths] if (each or globbed) else [paths]
    return [Entry({"instruction": text, "image": g}) for g in groups]


def _items(entries, base_seed: int) -> list:
    from ..batch import Item

    items = []
    for entry in entries:
        f = entry.fields
        images = f.get("image", [])
        extra = {"images": [images] if isinstance(images, str) else list(images)}
        if "cfg_image" in f:
            extra["cfg_image"] = f["cfg_image"]
        items.append(
            Item(
                index=len(items),
                prompt=f.get("instruction", ""),
                seed=f.get("seed", base_seed + len(items)),
                width=0,
                height=0,
                steps=f.get("steps"),
                cfg=f.get("cfg_text"),
                output=f.get("output"),
                line=entry.line,
                error=entry.error,
                extra=extra,
            )
        )
    return items


def _grid(size: str | None, multiplier: int):
    """The output grid --size asks for, or None: the first source's."""
    from ..limits import check_size, parse_size

    if not size:
        return None
    return check_size(*parse_size(size), multiplier)
