"""The quantization schemes' storage, without torch: shared by the loaders and the memory planner.

int8: one byte a weight plus an fp32 scale per row; nf4: half a byte plus an fp32 absmax per NF4_BLOCK
weights; fp8: one byte plus an fp32 inverse scale per FP8_BLOCK x FP8_BLOCK block. The scheme names are
llada_cli.limits' CHOICES["quant"] and ["decoder_quant"].
"""

from __future__ import annotations

import math

NF4_BLOCK = 64  # weights per nf4 absmax
FP8_BLOCK = 128  # rows and columns per fp8 scale block


def quant_bytes(shape: tuple[int, ...], quant: str) -> int:
    """Stored bytes of one weight under `quant`: payload plus fp32 scales."""
    n, rows, cols = math.prod(shape), math.prod(shape[:-1]), shape[-1]
    if quant == "none":
        return 2 * n
    if quant == "int8":
        return n + 4 * rows
    if quant == "nf4":
        return math.ceil(n / 2) + 4 * math.ceil(n / NF4_BLOCK)
    if quant == "fp8":
        blocks = (rows // shape[-2]) * math.ceil(shape[-2] / FP8_BLOCK) * math.ceil(cols / FP8_BLOCK)
        return n + 4 * blocks
    raise ValueError(f"unknown quantization {quant!r}")
