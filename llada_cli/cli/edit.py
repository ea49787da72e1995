"""`llada edit`: change one image (or several references) with an instruction; batches too."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated

import typer

from ..batch import DEFAULT_NAME, MANIFEST
from ..errors import UsageError
from ..io.files import ensure_writable_dir
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
    JsonOpt,
    KeepRatioOpt,
    MaxVramOpt,
    ModelOpt,
    Quant,
    QuantOpt,
    SeedOpt,
    SprintOpt,
    TextKeepOpt,
    Transparency,
    TransparencyOpt,
    VQPrecision,
    VQPrecisionOpt,
    WarmupOpt,
    show_quant_summary,
    sprint_settings,
)
from .plan import dry_run
from .runtime import output

BUDGETS = (512, 768, 1024)


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
    model: ModelOpt = DEFAULT_MODEL,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Output PNG (one edit only).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Output folder [.].")] = None,
    name: Annotated[str, typer.Option("--name", help="File name pattern: index, seed, slug.")] = DEFAULT_NAME,
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per 32-code block.")] = 8,
    cfg_text: Annotated[float, typer.Option("--cfg-text", help="Guidance on the instruction.")] = 4.0,
    cfg_image: Annotated[float, typer.Option("--cfg-image", help="Guidance on the source image.")] = 0.0,
    budget: Annotated[int, typer.Option("--budget", help="Crop pixel budget: 512, 768 or 1024.")] = 512,
    fit: Annotated[
        bool, typer.Option("--fit", help="Scale the source to the crop size instead of cutting a window.")
    ] = False,
    size: Annotated[
        str | None, typer.Option("--size", help="Output WIDTHxHEIGHT (default: the first source's).")
    ] = None,
    seed: SeedOpt = None,
    decoder: Annotated[Decoder, typer.Option("--decoder")] = Decoder.turbo,
    decoder_steps: Annotated[int | None, typer.Option("--decoder-steps")] = None,
    resolution_multiplier: Annotated[int, typer.Option("--resolution-multiplier")] = 2,
    force: ForceOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip edits the manifest marks done.")] = False,
    low_memory: Annotated[bool, typer.Option("--low-memory", help="All codes first, then decode.")] = False,
    no_metadata: Annotated[bool, typer.Option("--no-metadata")] = False,
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
    """Edit images with an instruction: one source, several references, or a batch.

    Examples:  llada edit photo.png "make the sky purple" --model tiny
               llada edit --image photo.png --instruction "make the sky purple"
               llada edit -i a.png -i b.png "put the cat from the second image on the sofa"
               llada edit -i "shots/*.png" "make it black and white" --out-dir bw
               llada edit --edits-file edits.jsonl --out-dir out --resume
    """
    from ..batch import Entry, Item, Manifest, read_edits_file
    from ..io.images import load_image
    from ..pipelines.edit import EditSettings
    from ..pipelines.generate import GenerateConfig, edit_to_codes
    from ..pipelines.text2image import grid_for
    from .generate import BatchFailed, _image_pipeline, _run, batch_seed, check_outputs

    show_quant_summary(quant, decoder_quant)
    check_flags(locals())  # every value through its rule (llada_cli.limits), before anything else
    positional_images, text = split_edit_args(args or [], instruction)
    image = positional_images + (image or [])
    if budget not in BUDGETS:
        raise UsageError(f"--budget {budget} is not one of {', '.join(map(str, BUDGETS))}")
    if dry:
        sizes = (budget, budget)
        dry_run(
            "edit", model, device, json_out, quant.value, decoder_quant.value, sizes, decoder.value, max_vram
        )
    if edits_file:
        if image or text:
            raise UsageError("--edits-file holds the images and instructions; do not pass them too")
        entries = read_edits_file(edits_file)
    else:
        if not image:
            raise UsageError("no image to edit", 'llada edit --image photo.png "make the sky purple"')
        if not text or not text.strip():
            raise UsageError("no instruction", 'llada edit --image photo.png "make the sky purple"')
        paths, globbed = _expand(image)
        for p in paths:
            load_image(p)  # a missing, unreadable or non-image file fails here, before any model loads
        groups = [[p] for p in paths] if (each or globbed) else [paths]
        entries = [Entry({"instruction": text, "image": g}) for g in groups]
    check_outputs(out, out_dir, len(entries), resume, name)
    folder = out_dir or Path(".")
    ensure_writable_dir(out.parent if out is not None else folder)
    manifest = Manifest(folder / MANIFEST) if (out_dir is not None or len(entries) > 1) else None
    base_seed = batch_seed(seed, manifest, resume)
    items = []
    for entry in entries:
        f = entry.fields
        images = f.get("image", [])
        items.append(
            Item(
                len(items),
                f.get("instruction", ""),
                f.get("seed", base_seed + len(items)),
                0,
                0,
                f.get("steps"),
                f.get("cfg_text"),
                f.get("output"),
                entry.line,
                entry.error,
                {
                    "images": [images] if isinstance(images, str) else list(images),
                    **({"cfg_image": f["cfg_image"]} if "cfg_image" in f else {}),
                },
            )
        )
    grid = None
    if size:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise UsageError(f"--size {size!r} is not WIDTHxHEIGHT") from None
        grid = grid_for(w, h, resolution_multiplier)
    sprint_cfg = sprint_settings(
        sprint,
        keep_ratio,
        image_keep_ratio,
        text_keep_ratio,
        confidence_alpha,
        cache_warmup_steps,
        confidence,
    )
    settings = EditSettings(
        cfg_text=cfg_text,
        cfg_image=cfg_image,
        steps=steps,
        budget=budget,
        fit=fit,
        sprint=sprint_cfg,
    )
    if sprint_cfg is not None and cfg_image > 0:
        output().warn("--sprint does not apply with image guidance (--cfg-image > 0); editing runs exactly")
    gen_cfg = GenerateConfig(
        decoder=decoder.value,
        decoder_steps=decoder_steps,
        resolution_multiplier=resolution_multiplier,
        low_memory=low_memory,
        metadata=not no_metadata,
        force=force,
        name_pattern=name,
    )
    pipe, phased = _image_pipeline(
        model,
        device,
        decoder.value,
        "edit",
        quant,
        decoder_quant,
        (budget, budget),
        max_vram,
        compile,
        image_precision=vq_precision.value,
        alpha=alpha.value,
    )
    gen_cfg.low_memory = gen_cfg.low_memory or phased
    failed = _run(
        pipe,
        gen_cfg,
        folder,
        manifest,
        items,
        out,
        resume,
        json_out,
        make_codes=edit_to_codes(pipe, settings, grid),
    )
    if failed:
        raise BatchFailed(f"{len(failed)} of {len(items)} edit(s) failed", "see the errors above")
