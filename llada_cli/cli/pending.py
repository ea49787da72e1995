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
    ImagesOpt,
    JsonOpt,
    ModelOpt,
    OutDirOpt,
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
