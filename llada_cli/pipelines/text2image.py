"""Text -> image codes on the backbone: the t2i template, classifier-free guidance, optional thinking.

The grid is pixels / (16 * resolution_multiplier) per side (32 px per code by default). Codes are drawn only
from the image-code range, exactly rows x columns of them. Guidance `u + s (c - u)` runs against the
`<uncondition>` prompt, left-padded to the conditional one; at scale 1.0 it is off and one row is computed.
Thinking mode first writes its reasoning as text until the model opens the image header (`<boi>`), then
draws the image with the thinking companion prompt.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..errors import LladaError, UsageError
from ..inputs.prompts import encode, t2i_prompt, t2i_thinking_prompt, t2i_thinking_uncond
from ..sampling import guidance
from ..sampling.block_diffusion import SamplerConfig, SamplerStats, run
from .runner import BackboneRunner

PIXELS_PER_CODE = 16  # the image tokenizer's patch; the decoder multiplies by resolution_multiplier


class ThinkingFailed(LladaError):
    """Thinking mode ended without the model opening an image."""


def grid_for(width: int, height: int, resolution_multiplier: int = 2) -> tuple[int, int]:
    """(rows, columns) of codes for an output size; the limits are in llada_cli.limits.check_size."""
    from ..limits import check_size

    return check_size(width, height, resolution_multiplier)


def size_for_aspect(aspect: str, budget: int = 1024 * 1024, step: int = 32) -> tuple[int, int]:
    """`16:9` -> (width, height): multiples of `step` whose area is nearest the pixel budget."""
    try:
        a, b = (float(x) for x in aspect.split(":"))
        if a <= 0 or b <= 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--aspect {aspect!r} is not W:H", "e.g. --aspect 16:9") from None
    height = math.sqrt(budget * b / a)
    w, h = max(step, round(height * a / b / step) * step), max(step, round(height / step) * step)
    return w, h


@dataclass
class ImageCodes:
    codes: list[int]
    grid: tuple[int, int]
    thinking: str | None
    stats: SamplerStats
    seconds: float
    thinking_stats: SamplerStats | None = None
    prompt_tokens: int = 0


@dataclass
class T2ISettings:
    cfg: float = 2.0
    steps: int = 8
    block_length: int = 32
    threshold: float = 0.95
    thinking: bool = False
    thinking_steps: int = 32
    thinking_length: int = 4096
    sprint: object = None  # SprintSettings for the lossy fast path; None keeps the exact cache
    extra: dict = field(default_factory=dict)


class ImageTokenGenerator:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.cfg = model, tokenizer, model.cfg

    @property
    def image_range(self) -> tuple[int, int]:
        return self.cfg.image_token_offset, self.cfg.vocab_size

    def _ids(self, pieces) -> list[int]:
        return encode(pieces, self.tokenizer, self.cfg.image_token_offset)

    def generate(
        self, prompt: str, grid: tuple[int, int], settings: T2ISettings, seed: int, on_step=None
    ) -> ImageCodes:
        h, w = grid
        if not prompt.strip():
            raise UsageError("the prompt is empty")
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        thinking, think_stats = None, None
        if settings.thinking:
            cond, thinking, think_stats = self._think(prompt, settings, generator)
            uncond = self._ids(t2i_thinking_uncond(h, w))
        else:
            cond = self._ids(t2i_prompt(prompt, h, w))
            uncond = self._ids(t2i_prompt(prompt, h, w, uncond=True))
        use_cfg = settings.cfg != 1.0
        combine = guidance.simple(settings.cfg) if use_cfg else None
        result = self.generate_rows(
            [cond, uncond] if use_cfg else [cond], grid, settings, generator, combine, on_step
        )
        result.thinking, result.thinking_stats = thinking, think_stats
        result.seconds = time.perf_counter() - start
        return result

    def generate_rows(
        self, rows: list[list[int]], grid: tuple[int, int], settings, generator, combine, on_step=None
    ) -> ImageCodes:
        """H x W image codes after the conditional prompt rows[0], guided by `combine` over all rows."""
        h, w = grid
        sprint = getattr(settings, "sprint", None)
        mask = self.tokenizer.ids["mask"]
        longest = max(len(r) for r in rows)
        cond = [mask] * (longest - len(rows[0])) + rows[0]  # the sampler sees the padded layout
        if len(cond) + h * w > self.cfg.max_position_embeddings:
            raise UsageError(
                f"prompt ({len(cond)} tokens) plus {h * w} image codes exceed the context of "
                f"{self.cfg.max_position_embeddings}",
                "use a smaller size or a shorter prompt",
            )
        start = time.perf_counter()
        mask = self.tokenizer.ids["mask"]
        sampler = SamplerConfig(
            gen_length=h * w,
            block_length=settings.block_length,
            steps=settings.steps,
            threshold=settings.threshold,
            vocab_range=self.image_range,
            sprint=sprint,
        )
        stats = SamplerStats()
        runner = BackboneRunner(self.model, rows, mask, h * w, settings.block_length, sprint)
        out = run(runner, cond, mask, sampler, generator, stats, on_step, combine)
        if len(out) != h * w:
            raise LladaError(f"the sampler returned {len(out)} codes for a {h}x{w} grid")
        codes = [t - self.cfg.image_token_offset for t in out]
        return ImageCodes(codes, grid, None, stats, time.perf_counter() - start, None, len(cond))

    def _think(self, prompt: str, settings: T2ISettings, generator: torch.Generator):
        """Phase 1: reasoning text, ended by the model's own image header; returns the phase-2 prompt."""
        ids = self._ids(t2i_thinking_prompt(prompt))
        mask, boi, eos = self.tokenizer.ids["mask"], self.tokenizer.ids["boi"], self.tokenizer.ids["eos"]
        length = min(settings.thinking_length, self.cfg.max_position_embeddings - len(ids))
        sampler = SamplerConfig(
            gen_length=length,
            block_length=settings.block_length,
            steps=settings.thinking_steps,
            threshold=settings.threshold,
            stop_ids=(boi, eos),
            vocab_range=(0, self.cfg.image_token_offset),
        )
        stats = SamplerStats()
        runner = BackboneRunner(self.model, [ids], mask, length, settings.block_length)
        out = run(runner, ids, mask, sampler, generator, stats, include_stop=True)
        if not out or out[-1] != boi:
            raise ThinkingFailed(
                "thinking mode: the model ended its reasoning without opening an image (<boi>)",
                "try again with another --seed, or without --thinking",
            )
        text = self.tokenizer.decode(out[:-1])
        return ids + out, text, stats
