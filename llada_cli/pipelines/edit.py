"""Image editing: source images cropped and encoded, then new codes under three-way guidance.

Rows: the conditional prompt (sources + instruction), the no-text companion (instruction replaced by
`<uncondition>`), and, only when the image scale is above 0, the no-image companion (sources reduced to a
lone `<|image|>`). Guidance `u + s_text (c - u) + s_img (u - u_img)`; with both scales off (text 0 or 1,
image 0) a single row is computed.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from ..inputs.preprocess import edit_crop
from ..inputs.prompts import edit_prompt
from ..io.images import LoadedImage
from ..sampling import guidance
from ..settings import EditSettings
from .text2image import ImageCodes, TextToImage
from .understand import EncodedImage, ImageEncoder


def guidance_plan(settings: EditSettings) -> tuple[tuple[str, ...], object]:
    """Which rows run and how they combine."""
    if settings.cfg_image > 0:
        return ("cond", "no_text", "no_image"), guidance.three_way(settings.cfg_text, settings.cfg_image)
    if settings.cfg_text in (0.0, 1.0):
        return ("cond",), None
    return ("cond", "no_text"), guidance.simple(settings.cfg_text)


class Editor:
    def __init__(self, t2i: TextToImage, encoder: ImageEncoder):
        self.t2i, self.encoder = t2i, encoder

    def sources(self, images: list[LoadedImage], settings: EditSettings) -> list[EncodedImage]:
        """Crop each source the editing way (official window, or scaled first with `fit`) and encode it."""
        return self.encoder.encode(
            images,
            prepare=lambda img: edit_crop(img, settings.budget, settings.fit),
            tag=("edit", settings.budget, settings.fit),
        )

    def edit(
        self,
        sources: list[EncodedImage],
        instruction: str,
        settings: EditSettings,
        seed: int,
        grid: tuple[int, int] | None = None,
        on_step=None,
    ) -> ImageCodes:
        from ..errors import UsageError

        if not sources:
            raise UsageError("editing needs at least one image", "pass --image PATH")
        if not instruction.strip():
            raise UsageError("the instruction is empty", 'e.g. "make the sky purple"')
        h, w = grid or sources[0].grid
        blocks = [s.block for s in sources]
        sampler = settings.sampler
        if sampler.sprint is not None and settings.cfg_image > 0:
            sampler = dataclasses.replace(sampler, sprint=None)  # SPRINT falls back with image guidance
        rows_needed, combine = guidance_plan(settings)
        rows = [
            self.t2i.ids(edit_prompt(blocks, instruction, h, w, variant, settings.layout))
            for variant in rows_needed
        ]
        start = time.perf_counter()
        result = self.t2i.generate_rows(
            rows, (h, w), sampler, torch.Generator().manual_seed(seed), combine, on_step
        )
        result.seconds = time.perf_counter() - start
        return result
