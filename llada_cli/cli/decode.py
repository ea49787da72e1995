"""`llada decode`: saved image codes to a picture again, without the backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..limits import check_flags
from .options import (
    DecoderFlags,
    DecoderQuant,
    DecoderQuantOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    SeedOpt,
    decoder_options,
)
from .runtime import output


@decoder_options()
def decode(
    codes_file: Annotated[Path, typer.Argument(help="A .codes.json written by llada generate.")],
    model: ModelOpt = None,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Output image.")] = None,
    seed: SeedOpt = None,
    force: ForceOpt = False,
    device: Annotated[
        str, typer.Option("--device", envvar="LLADA_DEVICE", help="cuda, cuda:N, cpu or auto.")
    ] = "auto",
    decoder_quant: DecoderQuantOpt = DecoderQuant.none,
    json_out: JsonOpt = False,
    decoding: DecoderFlags = None,
) -> None:
    """Turn saved image codes into a picture again, without the backbone (another decoder, steps or seed)."""
    from ..engine import Engine
    from ..io.files import check_replaceable, display_path, ensure_writable_dir
    from ..io.imagefiles import save_image
    from ..io.outputs import image_format
    from ..io.promptfiles import read_codes_file
    from ..memory.plan import PlanRequest
    from ..records import GenerationRecord, decoder_record
    from ..settings import RunOptions
    from ..weights.registry import DEFAULT_MODEL
    from .options import show_quant_summary

    check_flags(locals())
    saved = read_codes_file(codes_file)  # a file that is not one is exit 2 before anything loads
    record = GenerationRecord.from_json(
        saved, f"not a llada codes file: {display_path(codes_file)}:", partial=True
    )
    settings = decoding.settings()
    seed = seed if seed is not None else record.seed
    stem = codes_file.name.removesuffix(".codes.json").removesuffix(".json")
    target = out or codes_file.with_name(f"{stem}-{settings.mode}-s{seed}.png")
    image_format(target, "--output")
    check_replaceable(target)
    if target.exists() and not force:
        raise UsageError(f"{target} exists", "pass --force to overwrite it, or -o another name")
    ensure_writable_dir(target.parent)
    options = RunOptions(device=device, decoder_quant=decoder_quant.value)
    show_quant_summary(options)
    model = model or DEFAULT_MODEL
    engine = Engine(model, options, plan=PlanRequest(command="decode", model=model, decoder=settings.mode))
    # the codes against the checkpoint's image vocabulary, before the decoder loads
    engine.check_codes(saved["codes"], f"not a llada codes file: {display_path(codes_file)}")
    image, timings = engine.decode(saved["codes"], record.grid, seed, settings)
    ensure_writable_dir(target.parent)  # the folder may have gone while the decoder ran
    record = record.with_(
        seed=seed, codes_file=codes_file.name, settings=record.settings | decoder_record(settings)
    )
    save_image(image, target, record.to_json())
    result = record.to_json() | {
        "path": str(target),
        "seconds": round(timings.sigvq + timings.decoder + timings.vae, 4),
        "decoder_evaluations": timings.decoder_evaluations,
    }
    output().json(result) if json_out else output().data(display_path(target))
