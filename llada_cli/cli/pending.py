"""The model commands not built yet, with their documented options; their bodies arrive in later releases.

Each says so with exit code 1 instead of producing anything: no fake answers, no placeholder images.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import NotAvailableYet
from ..weights.registry import DEFAULT_MODEL
from .options import Decoder as DecoderChoice
from .options import (
    DecoderOpt,
    DeviceOpt,
    ForceOpt,
    ImagesOpt,
    JsonOpt,
    ModelOpt,
    OutDirOpt,
    OutputOpt,
    Quant,
    QuantOpt,
    SeedOpt,
    StepsOpt,
    SystemOpt,
)


def _not_yet(command: str, what: str) -> NotAvailableYet:
    return NotAvailableYet(
        f"`llada {command}` is not available yet: {what} has not been built",
        "see the Status section of the README; `llada doctor --model tiny` checks the install meanwhile",
    )


def edit(
    instruction_arg: Annotated[
        str | None, typer.Argument(metavar="INSTRUCTION", help="What to change.")
    ] = None,
    image: ImagesOpt = None,
    instruction: Annotated[str | None, typer.Option("--instruction", help="What to change.")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    output: OutputOpt = None,
    out_dir: OutDirOpt = None,
    steps: StepsOpt = None,
    cfg_text: Annotated[float, typer.Option("--cfg-text")] = 4.0,
    cfg_image: Annotated[float, typer.Option("--cfg-image")] = 0.0,
    decoder: DecoderOpt = DecoderChoice.turbo,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    quant: QuantOpt = Quant.none,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Edit one or several images with an instruction."""
    raise _not_yet("edit", "image editing")


def interleave(
    prompt: Annotated[str | None, typer.Argument(help="What to write and illustrate.")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    out_dir: OutDirOpt = None,
    image: ImagesOpt = None,
    system: SystemOpt = None,
    max_frames: Annotated[int, typer.Option("--max-frames", min=1)] = 10,
    steps: StepsOpt = None,
    decoder: DecoderOpt = DecoderChoice.turbo,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    quant: QuantOpt = Quant.none,
    json_out: JsonOpt = False,
) -> None:
    """Write a document that interleaves text and generated images."""
    raise _not_yet("interleave", "interleaved generation")
