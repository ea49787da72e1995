"""Options shared by several commands, declared once as `Annotated` aliases (name, env var, help)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class Decoder(str, Enum):
    turbo = "turbo"
    normal = "normal"


class DecoderQuant(str, Enum):
    none = "none"
    int8 = "int8"
    nf4 = "nf4"


class VQPrecision(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"


class Transparency(str, Enum):
    drop = "drop"
    white = "white"
    black = "black"


class Quant(str, Enum):
    none = "none"
    int8 = "int8"
    nf4 = "nf4"
    fp8 = "fp8"


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="LLADA_MODEL",
        help="Hub repo id (repo@revision allowed), a local folder, or `tiny` / `tiny-fp8`.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", envvar="LLADA_DEVICE", help="cuda, cuda:N, cpu or auto.")]
QuantOpt = Annotated[
    Quant,
    typer.Option(
        "--quant",
        envvar="LLADA_QUANT",
        help="Backbone experts on load: int8, nf4 (bitsandbytes), fp8 (kept on FP8 GPUs).",
    ),
]
DecoderQuantOpt = Annotated[
    DecoderQuant,
    typer.Option("--decoder-quant", envvar="LLADA_DECODER_QUANT", help="Decoder transformer on load."),
]
CompileOpt = Annotated[
    bool, typer.Option("--compile", help="torch.compile the per-block step (opt-in: slower start, unproven).")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the memory plan (what goes where, and why) and stop.")
]
MaxVramOpt = Annotated[
    float | None, typer.Option("--max-vram", help="GB of GPU memory llada may use (default: all free).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (recorded in every output).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (JSON Lines for batches).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
DecoderOpt = Annotated[Decoder, typer.Option("--decoder", help="turbo: 8 distilled steps; normal: 50 steps.")]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Diffusion steps per 32-token block.")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Output file.")]
OutDirOpt = Annotated[Path | None, typer.Option("--out-dir", help="Output folder.")]
ImagesOpt = Annotated[
    list[str] | None, typer.Option("--image", "-i", help="Input image path (repeatable; - = stdin).")
]
SystemOpt = Annotated[str | None, typer.Option("--system", help="Replace the system prompt.")]
VQPrecisionOpt = Annotated[
    VQPrecision,
    typer.Option(
        "--vq-precision",
        help="Image tokenizer arithmetic (vision tower and code search): bf16 as the official code, "
        "or fp32 (not the official numerics).",
    ),
]
TransparencyOpt = Annotated[
    Transparency,
    typer.Option(
        "--alpha",
        help="Transparent pixels of input images: drop the alpha channel as the official code does, "
        "or composite on white / black.",
    ),
]


class Confidence(str, Enum):
    low = "low"
    margin = "margin"
    entropy = "entropy"


SprintOpt = Annotated[
    bool, typer.Option("--sprint", help="SPRINT fast path: pruned prefix cache, adaptive unmasking.")
]
KeepRatioOpt = Annotated[float, typer.Option("--keep-ratio", help="SPRINT: share of prefix positions kept.")]
ImageKeepOpt = Annotated[
    float | None, typer.Option("--image-keep-ratio", help="SPRINT: share of image-code positions kept.")
]
TextKeepOpt = Annotated[
    float | None, typer.Option("--text-keep-ratio", help="SPRINT: share of text positions kept.")
]
AlphaOpt = Annotated[
    float, typer.Option("--confidence-alpha", help="SPRINT: weight of attention vs confidence.")
]
WarmupOpt = Annotated[int, typer.Option("--cache-warmup-steps", help="SPRINT: full steps before pruning.")]
ConfidenceOpt = Annotated[Confidence, typer.Option("--confidence", help="SPRINT: how positions are ranked.")]


def sprint_settings(
    enabled: bool, keep_ratio: float, image_keep_ratio, text_keep_ratio, alpha: float, warmup: int, confidence
):
    """The SPRINT settings, or None when --sprint is off; bad values are usage errors."""
    from ..errors import UsageError
    from ..sampling.sprint import SprintSettings

    if not enabled:
        return None
    try:
        return SprintSettings(keep_ratio, image_keep_ratio, text_keep_ratio, alpha, warmup, confidence.value)
    except ValueError as exc:
        raise UsageError(f"--sprint: {exc}") from None


def show_quant_summary(*choices: Enum) -> None:
    """With a quantization chosen, the loaders' summary (what was packed, what stayed) is shown on stderr."""
    import logging

    chosen = any(c.value != "none" for c in choices)
    shown = chosen and logging.getLogger("llada").getEffectiveLevel() <= logging.WARNING
    logging.getLogger("llada.quant").setLevel(logging.INFO if shown else logging.NOTSET)
