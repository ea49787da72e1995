"""Text -> image codes on the backbone: the t2i template, classifier-free guidance, optional thinking.

The grid is pixels / (16 * resolution_multiplier) per side (32 px per code by default). Codes are drawn only
from the image-code range, exactly rows x columns of them. Guidance `u + s (c - u)` runs against the
`<uncondition>` prompt, left-padded to the conditional one; at scale 1.0 it is off and one row is computed.
Thinking mode first writes its reasoning as text until the model opens the image header (`<boi>`), then
draws the image with the thinking companion prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import ContextOverflow, LladaError, UsageError
from ..inputs.prompts import encode, t2i_prompt, t2i_thinking_prompt, t2i_thinking_uncond
from ..sampling import guidance
from ..sampling.block_diffusion import SamplerStats
from ..sampling.settings import SamplerSettings
from ..settings import ImageSettings
from .runner import sample_rows


class ThinkingFailed(LladaError):
    """Thinking mode ended without the model opening an image."""


def grid_for(width: int, height: int, resolution_multiplier: int = 2) -> tuple[int, int]:
    """(rows, columns) of codes for an output size; the limits are in llada_cli.limits.check_size."""
    from ..limits import check_size

    return check_size(width, height, resolution_multiplier)


@dataclass
class ImageCodes:
    codes: list[int]
    grid: tuple[int, int]
    thinking: str | None
    stats: SamplerStats
    seconds: float
    thinking_stats: SamplerStats | None = None
    prompt_tokens: int = 0


class TextToImage:
    """The backbone writing image codes: from a prompt (with guidance and thinking), or from any rows."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.config = model, tokenizer, model.cfg

    @property
    def image_range(self) -> tuple[int, int]:
        return self.config.image_token_offset, self.config.vocab_size

    def ids(self, pieces) -> list[int]:
        return encode(pieces, self.tokenizer, self.config.image_token_offset)

    def generate(
        self, prompt: str, grid: tuple[int, int], settings: ImageSettings, seed: int, on_step=None
    ) -> ImageCodes:
        h, w = grid
        if not prompt.strip():
            raise UsageError("the prompt is empty")
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        thinking, think_stats = None, None
        if settings.thinking:
            cond, thinking, think_stats = self._think(prompt, settings, generator)
            uncond = self.ids(t2i_thinking_uncond(h, w))
        else:
            cond = self.ids(t2i_prompt(prompt, h, w))
            uncond = self.ids(t2i_prompt(prompt, h, w, uncond=True))
        use_cfg = settings.cfg != 1.0
        combine = guidance.simple(settings.cfg) if use_cfg else None
        rows = [cond, uncond] if use_cfg else [cond]
        result = self.generate_rows(rows, grid, settings.sampler, generator, combine, on_step)
        result.thinking, result.thinking_stats = thinking, think_stats
        result.seconds = time.perf_counter() - start
        return result

    def generate_rows(
        self,
        rows: list[list[int]],
        grid: tuple[int, int],
        sampler: SamplerSettings,
        generator: torch.Generator,
        combine,
        on_step=None,
    ) -> ImageCodes:
        """H x W image codes after the conditional prompt rows[0], guided by `combine` over all rows."""
        h, w = grid
        longest = max(len(r) for r in rows)  # the sampler sees the padded layout
        if longest + h * w > self.config.max_position_embeddings:
            raise ContextOverflow(
                f"prompt ({longest} tokens) plus {h * w} image codes exceed the context of "
                f"{self.config.max_position_embeddings}",
                "use a smaller size or a shorter prompt",
            )
        start = time.perf_counter()
        out, stats, prompt_len = sample_rows(
            self.model,
            rows,
            self.tokenizer.ids["mask"],
            sampler,
            gen_length=h * w,
            generator=generator,
            guidance=combine,
            vocab_range=self.image_range,
            on_step=on_step,
        )
        if len(out) != h * w:
            raise LladaError(f"the sampler returned {len(out)} codes for a {h}x{w} grid")
        codes = [t - self.config.image_token_offset for t in out]
        return ImageCodes(codes, grid, None, stats, time.perf_counter() - start, None, prompt_len)

    def write_text(self, ids: list[int], sampler: SamplerSettings, length: int, generator, on_step=None):
        """A text run after `ids` (text vocabulary only), ended by end of text or the model's image
        header (`<boi>`, kept): thinking's reasoning and an interleaved document's text alike."""
        ids_of = self.tokenizer.ids
        out, stats, _ = sample_rows(
            self.model,
            [ids],
            ids_of["mask"],
            sampler,
            gen_length=length,
            generator=generator,
            stop_ids=(ids_of["eos"], ids_of["boi"]),
            vocab_range=(0, self.config.image_token_offset),
            on_step=on_step,
            include_stop=True,
        )
        return out, stats

    def _think(self, prompt: str, settings: ImageSettings, generator: torch.Generator):
        """Phase 1: reasoning text, ended by the model's own image header; returns the phase-2 prompt."""
        ids = self.ids(t2i_thinking_prompt(prompt))
        length = min(settings.thinking_length, self.config.max_position_embeddings - len(ids))
        out, stats = self.write_text(ids, settings.thinking_sampler, length, generator)
        if not out or out[-1] != self.tokenizer.ids["boi"]:
            raise ThinkingFailed(
                "thinking mode: the model ended its reasoning without opening an image (<boi>)",
                "try again with another --seed, or without --thinking",
            )
        return ids + out, self.tokenizer.decode(out[:-1]), stats
