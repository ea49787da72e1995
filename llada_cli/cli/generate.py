"""`llada generate` (text to images, one or a batch) and `llada decode` (codes file to image)."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from ..batch import DEFAULT_NAME, MANIFEST
from ..errors import EXIT_BATCH_PARTIAL, LladaError, UsageError
from ..io.files import display_path, ensure_writable_dir
from ..limits import check_flags, check_size
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
    WarmupOpt,
    show_quant_summary,
    sprint_settings,
)
from .plan import RunPlacement, dry_run, planned_placement
from .runtime import output

DEFAULTS = {"width": 1024, "height": 1024, "steps": 8, "cfg": 2.0, "decoder": "turbo", "thinking": False}


class BatchFailed(LladaError):
    exit_code = EXIT_BATCH_PARTIAL


def _size(size: str | None, width: int | None, height: int | None, aspect: str | None, record: dict):
    from ..pipelines.text2image import size_for_aspect

    if sum(x is not None for x in (size, aspect)) + (width is not None or height is not None) > 1:
        raise UsageError("choose one of --size, --aspect or --width/--height")
    if size:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise UsageError(f"--size {size!r} is not WIDTHxHEIGHT", "e.g. --size 1024x768") from None
        return w, h
    if aspect:
        return size_for_aspect(aspect)
    return (
        width or record.get("width") or DEFAULTS["width"],
        height or record.get("height") or DEFAULTS["height"],
    )


def generate(
    prompt: Annotated[list[str] | None, typer.Argument(help="One or more prompts.")] = None,
    model: ModelOpt = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option("--prompts-file", "--from", help="Prompts: .txt (one per line), .jsonl or .csv."),
    ] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Images per prompt.")] = 1,
    size: Annotated[
        str | None, typer.Option("--size", help="WIDTHxHEIGHT, multiples of 32 [1024x1024].")
    ] = None,
    width: Annotated[int | None, typer.Option("--width")] = None,
    height: Annotated[int | None, typer.Option("--height")] = None,
    aspect: Annotated[str | None, typer.Option("--aspect", help="W:H near one megapixel, e.g. 16:9.")] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Denoising steps per 32-code block [8].")
    ] = None,
    cfg: Annotated[
        float | None, typer.Option("--cfg", help="Guidance scale; 1.0 turns it off [2.0].")
    ] = None,
    block_length: Annotated[int, typer.Option("--block-length")] = 32,
    threshold: Annotated[float, typer.Option("--threshold")] = 0.95,
    seed: SeedOpt = None,
    thinking: Annotated[
        bool | None, typer.Option("--thinking/--no-thinking", help="Reason in text before drawing.")
    ] = None,
    thinking_steps: Annotated[int, typer.Option("--thinking-steps")] = 32,
    thinking_length: Annotated[int, typer.Option("--thinking-length")] = 4096,
    decoder: Annotated[
        Decoder | None, typer.Option("--decoder", help="turbo (8 steps) or normal (50 steps) [turbo].")
    ] = None,
    decoder_steps: Annotated[int | None, typer.Option("--decoder-steps")] = None,
    resolution_multiplier: Annotated[int, typer.Option("--resolution-multiplier")] = 2,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Output PNG (one image only).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Output folder [.].")] = None,
    name: Annotated[
        str, typer.Option("--name", help="File name pattern: index, seed, slug, width, height.")
    ] = DEFAULT_NAME,
    force: ForceOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip items the manifest marks done.")] = False,
    low_memory: Annotated[
        bool, typer.Option("--low-memory", help="All codes first, release the backbone, then decode.")
    ] = False,
    no_metadata: Annotated[
        bool, typer.Option("--no-metadata", help="No generation record in the PNG.")
    ] = False,
    params_from: Annotated[
        Path | None, typer.Option("--params-from", help="Reuse prompt, seed and settings of a llada PNG.")
    ] = None,
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
    json_out: JsonOpt = False,
) -> None:
    """Generate images from text: one prompt, several, or a prompts file.

    Examples:  llada generate "a red fox in the snow" --model tiny --size 256x256
               llada generate --prompts-file prompts.jsonl --out-dir out -n 2 --json
               llada generate --params-from out/0000-42-a-red-fox.png --decoder normal
    """
    from ..batch import Entry, Manifest, plan_items, read_prompts_file
    from ..io.imagefiles import read_params
    from ..pipelines.generate import GenerateConfig
    from ..pipelines.text2image import T2ISettings

    show_quant_summary(quant, decoder_quant)
    check_flags(locals())  # every value through its rule (llada_cli.limits), before anything else
    if prompt and not all(p.strip() for p in prompt):
        raise UsageError("a prompt is empty", 'llada generate "a red fox in the snow"')
    record = read_params(params_from) if params_from else {}
    previous = record.get("settings", {})
    prompts = list(prompt or [])
    if prompts and prompts_file:
        raise UsageError("give prompts as arguments or with --prompts-file, not both")
    if prompts_file:
        entries = read_prompts_file(prompts_file)
    else:
        if not prompts and record.get("prompt"):
            prompts = [record["prompt"]]
        if not prompts:
            raise UsageError("no prompt given", 'llada generate "a red fox in the snow"')
        entries = [Entry({"prompt": p}) for p in prompts]
    w, h = _size(size, width, height, aspect, record)
    what = f"--aspect {aspect} gives" if aspect else "size"
    check_size(w, h, resolution_multiplier, what)  # a bad global size is a usage error before anything loads
    model = model if model is not None else record.get("model") or DEFAULT_MODEL  # "" stays "": refused
    decoder_name = (decoder.value if decoder else None) or previous.get("decoder") or DEFAULTS["decoder"]
    if dry:
        quants = (quant.value, decoder_quant.value)
        dry_run("generate", model, device, json_out, *quants, (w, h), decoder_name, max_vram)
    check_outputs(out, out_dir, len(entries) * num_images, resume, name)
    folder = out_dir or Path(".")
    ensure_writable_dir(out.parent if out is not None else folder)
    batch = out_dir is not None or len(entries) * num_images > 1
    manifest = Manifest(folder / MANIFEST) if batch else None
    base_seed = batch_seed(seed if seed is not None else record.get("seed"), manifest, resume)
    items = plan_items(entries, num_images, base_seed, w, h)
    sprint_cfg = sprint_settings(
        sprint,
        keep_ratio,
        image_keep_ratio,
        text_keep_ratio,
        confidence_alpha,
        cache_warmup_steps,
        confidence,
    )
    gen_cfg = GenerateConfig(
        t2i=T2ISettings(
            cfg=cfg if cfg is not None else previous.get("cfg", DEFAULTS["cfg"]),
            steps=steps or previous.get("steps") or DEFAULTS["steps"],
            block_length=block_length,
            threshold=threshold,
            thinking=thinking if thinking is not None else previous.get("thinking", DEFAULTS["thinking"]),
            thinking_steps=thinking_steps,
            thinking_length=thinking_length,
            sprint=sprint_cfg,
        ),
        decoder=decoder_name,
        decoder_steps=decoder_steps or (previous.get("decoder_steps") if decoder is None else None),
        resolution_multiplier=resolution_multiplier,
        low_memory=low_memory,
        metadata=not no_metadata,
        force=force,
        name_pattern=name,
    )
    pipe, phased = _image_pipeline(
        model, device, decoder_name, "generate", quant, decoder_quant, (w, h), max_vram, compile
    )
    gen_cfg.low_memory = gen_cfg.low_memory or phased
    failed = _run(pipe, gen_cfg, folder, manifest, items, out, resume, json_out)
    if failed:
        raise BatchFailed(
            f"{len(failed)} of {len(items)} image(s) failed",
            f"see the errors above{' and ' + str(manifest.path) if manifest else ''}",
        )


def check_outputs(
    out: Path | None, out_dir: Path | None, n_items: int, resume: bool, pattern: str | None = None
) -> None:
    """Flags about where results go that cannot work together, and the names they give; checked before
    anything is loaded or written."""
    from ..io.outputs import check_name_pattern, image_format

    if out is not None and (n_items > 1 or out_dir is not None):
        raise UsageError("--output names one image; use --out-dir for several")
    if resume and out_dir is None:
        raise UsageError("--resume needs the --out-dir that holds the manifest")
    if out is not None:
        image_format(out, "--output")
    elif pattern is not None:
        check_name_pattern(pattern)


def batch_seed(seed: int | None, manifest, resume: bool) -> int:
    """The batch's base seed: given, or the one a resumed batch started with, or drawn; recorded in the
    manifest so that `--resume` without `--seed` gives every item the seed it had."""
    if seed is None and resume and manifest is not None:
        seed = manifest.load().get("batch", {}).get("base_seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    if manifest is not None:  # written with the first item's line
        manifest.pending = {"id": "batch", "state": "batch", "base_seed": seed}
    return seed


def _image_pipeline(
    model: str,
    device: str,
    decoder: str,
    command: str = "generate",
    quant=None,
    decoder_quant=None,
    size: tuple[int, int] = (1024, 1024),
    max_vram: float | None = None,
    compile: bool = False,
    image_precision: str = "bf16",
    alpha: str = "drop",
):
    """The image pipeline placed by the memory plan; returns it and whether the plan wants phases."""
    from ..checkpoint.layout import components_for
    from ..hub.resolve import parse_model_ref, resolve
    from ..pipelines.generate import ImagePipeline
    from ..runtime.device import resolve_device

    ref = parse_model_ref(model)
    dev, dtype = resolve_device(device)
    quants = (getattr(quant, "value", "none"), getattr(decoder_quant, "value", "none"))
    if command == "decode":  # no backbone: the decoder stack alone
        placement = RunPlacement()
    else:
        placement = planned_placement(command, model, dev, *quants, size, decoder, max_vram)
    root = resolve(ref, components_for("generate" if command == "decode" else command, decoder))
    revision = root.name if ref.repo_id else None
    placed = dict(
        layer_devices=placement.layer_devices,
        decoder_offload=placement.decoder_offload,
        compile=compile,
        stage_devices=placement.stage_devices,
        image_precision=image_precision,
        alpha=alpha,
    )
    pipe = ImagePipeline(
        root, ref.label, placement.device or dev, dtype, decoder, revision, *quants, **placed
    )
    return pipe, placement.phased


def _run(pipe, gen_cfg, folder, manifest, items, single, resume, json_out, make_codes=None):
    from ..pipelines.generate import BatchRun

    out = output()
    with _progress(out, len(items)) as progress:
        events = CliEvents(out, json_out, progress)
        return BatchRun(pipe, gen_cfg, folder, manifest, events, single, make_codes).run(items, resume)


def _progress(out, total: int):
    if not out.interactive:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out.console,
        transient=True,
    )
    progress.images = progress.add_task("images", total=total)
    return progress


class CliEvents:
    """Renders batch events: paths or JSON lines on stdout, progress and problems on stderr."""

    def __init__(self, out, json_out: bool, progress):
        self.out, self.json_out, self.progress = out, json_out, progress

    def _describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.progress.images, description=text)

    def started(self, item, phase: str) -> None:
        self._describe(
            f"[{item.index + 1}] {'codes' if phase == 'codes' else 'decoding'}: {item.prompt[:40]}"
        )

    def stage(self, item, stage: str, step: int, total: int) -> None:
        if stage == "decoder" and total:
            self._describe(f"[{item.index + 1}] decoder {step}/{total}")

    def thinking(self, item, text: str) -> None:
        self.out.console.print(f"thinking [{item.index + 1}]: {text}", markup=False, style="dim")

    def done(self, item, record: dict) -> None:
        if self.progress is not None:
            self.progress.advance(self.progress.images)
        if self.json_out:
            self.out.json(record)
        else:
            self.out.data(display_path(record["path"]))

    def failed(self, item, message: str) -> None:
        if self.progress is not None:
            self.progress.advance(self.progress.images)
        where = f" (line {item.line})" if item.line else ""
        self.out.console.print(f"error: image {item.index + 1}{where}: {message}", markup=False, style="red")

    def skipped(self, item, why: str) -> None:
        if self.progress is not None:
            self.progress.advance(self.progress.images)
        self.out.detail(f"image {item.index + 1}: skipped, {why}")


def decode(
    codes_file: Annotated[Path, typer.Argument(help="A .codes.json written by llada generate.")],
    model: ModelOpt = DEFAULT_MODEL,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Output PNG.")] = None,
    decoder: Annotated[Decoder, typer.Option("--decoder")] = Decoder.turbo,
    decoder_steps: Annotated[int | None, typer.Option("--decoder-steps")] = None,
    resolution_multiplier: Annotated[int, typer.Option("--resolution-multiplier")] = 2,
    seed: SeedOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    decoder_quant: DecoderQuantOpt = DecoderQuant.none,
    json_out: JsonOpt = False,
) -> None:
    """Turn saved image codes into a picture again, without the backbone (another decoder, steps or seed)."""
    from ..batch import check_code_range, read_codes_file
    from ..checkpoint.components import read_config
    from ..io.files import check_replaceable
    from ..io.imagefiles import save_image
    from ..io.outputs import image_format
    from ..pipelines.decode import DEFAULT_DECODER_STEPS
    from ..pipelines.generate import decode_codes_file

    check_flags(locals())

    saved = read_codes_file(codes_file)  # a file that is not one is exit 2 before anything loads
    seed = seed if seed is not None else int(saved.get("seed") or 0)
    stem = codes_file.name.removesuffix(".codes.json").removesuffix(".json")
    target = out or codes_file.with_name(f"{stem}-{decoder.value}-s{seed}.png")
    image_format(target, "--output")
    check_replaceable(target)
    if target.exists() and not force:
        raise UsageError(f"{target} exists", "pass --force to overwrite it, or -o another name")
    ensure_writable_dir(target.parent)
    show_quant_summary(decoder_quant)
    pipe, _ = _image_pipeline(model, device, decoder.value, "decode", None, decoder_quant)
    check_code_range(saved, read_config(pipe.root, "backbone").image_vocab_size, codes_file)
    image, timings, seconds = decode_codes_file(pipe, saved, seed, decoder_steps, resolution_multiplier)
    ensure_writable_dir(target.parent)  # the folder may have gone while the decoder ran
    record = {k: v for k, v in saved.items() if k not in ("codes", "backbone")}
    record["seed"] = seed
    record.setdefault("settings", {}).update(
        decoder=decoder.value,
        decoder_steps=decoder_steps or DEFAULT_DECODER_STEPS[decoder.value],
        resolution_multiplier=resolution_multiplier,
    )
    record["codes_file"] = codes_file.name
    save_image(image, target, record)
    result = record | {
        "path": str(target),
        "seconds": round(seconds, 4),
        "decoder_evaluations": timings.decoder_evaluations,
    }
    if json_out:
        output().json(result)
    else:
        output().data(display_path(target))
