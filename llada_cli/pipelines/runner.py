"""The backbone as a `BlockModel` for the sampler: CFG rows, left padding and the exact prefix cache,
and `sample_rows`, the one place every task (chat, image codes, thinking, editing, interleave) turns its
SamplerSettings and guidance rows into a sampler run.

Every row (the conditional prompt and its guidance companions) shares one canvas layout: companions are
left-padded with the mask id to the conditional prompt's length, their positions restart at 0 after the
padding, and no query ever attends to a pad key. The sampler's tokens are written into every row, so the
rows stay aligned block for block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..models.llada2_moe import LLaDA2MoeModel, block_causal_mask
from ..sampling.block_diffusion import Guidance, SamplerStats, StepEvent, run
from ..sampling.settings import SamplerSettings


class BackboneRunner:
    def __init__(
        self,
        model: LLaDA2MoeModel,
        rows: list[list[int]],
        mask_id: int,
        gen_length: int,
        settings: SamplerSettings,
    ):
        block = settings.block_length
        prompt_len = max(len(r) for r in rows)  # every row is left-padded to the longest
        device = model.lm_head.weight.device
        self.model, self.block, self.prompt_len = model, block, prompt_len
        total = math.ceil((prompt_len + gen_length) / block) * block
        self.canvas = torch.full((len(rows), total), mask_id, dtype=torch.long, device=device)
        self.pad = torch.tensor([prompt_len - len(r) for r in rows], device=device)
        for i, r in enumerate(rows):
            self.canvas[i, prompt_len - len(r) : prompt_len] = torch.tensor(r, dtype=torch.long)
        self.recompute = settings.prefix_cache == "recompute"  # SPRINT's pruning needs the cache
        self.cache = None if self.recompute else model.make_cache(len(rows), total)
        self.sprint, self._block = (None if self.recompute else settings.sprint), None
        self.confidence = torch.ones(total)  # prompt tokens count as certain; generated ones as sampled

    def _window(self, tokens: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the sampler's generated tokens into every row; return ids and positions [R, n]."""
        n = tokens.shape[0]
        gen_from = max(self.prompt_len - start, 0)
        if gen_from < n:
            self.canvas[:, start + gen_from : start + n] = tokens[gen_from:].to(self.canvas.device)
        pos = torch.arange(start, start + n, device=self.canvas.device)[None] - self.pad[:, None]
        return self.canvas[:, start : start + n], pos.clamp(min=0)

    def _mask(self, start: int, n: int) -> torch.Tensor:
        """[R, 1, n, start + n]: block-causal among the new tokens, all of the prefix, never a pad key
        (a pad query may see itself, so no row of the softmax is empty)."""
        keys = torch.arange(start + n, device=self.canvas.device)
        new = torch.ones(n, start + n, dtype=torch.bool, device=keys.device)
        new[:, start:] = block_causal_mask(n, self.block, keys.device)
        not_pad = keys[None, :] >= self.pad[:, None]  # [R, S]
        self_key = keys[None, :] == (start + torch.arange(n, device=keys.device))[:, None]  # [n, S]
        return (new[None] & not_pad[:, None]) | self_key[None]

    def logits(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        if self.recompute:
            return self._recomputed_logits(tokens, start)
        if start != self._block:  # a new block: full prefix again, gather attention during the warm-up
            self._block = start
            self.cache.view = None
            self.cache.scoring = self.sprint is not None and start > 0
            self.cache.attn_mass.zero_()
        ids, pos = self._window(tokens, start)
        mask = self._mask(start, ids.shape[1])
        if self.cache.view is not None:
            keep = torch.cat((self.cache.view, torch.arange(start, start + ids.shape[1], device=mask.device)))
            mask = mask[:, :, keep]
        with torch.no_grad():
            return self.model(ids, pos, mask[:, None], self.cache, commit=False)

    def _recomputed_logits(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        end = self._window(tokens, start)[0].shape[1] + start
        ids = self.canvas[:, :end]
        pos = (torch.arange(end, device=ids.device)[None] - self.pad[:, None]).clamp(min=0)
        mask = self._mask(0, ids.shape[1])
        with torch.no_grad():
            return self.model(ids, pos, mask[:, None], None, logits_from=start)

    def observe(self, positions: torch.Tensor, confidence: torch.Tensor) -> None:
        self.confidence[positions] = confidence.float()

    def prune(self, start: int) -> None:
        """Keep the top share of prefix positions per modality for the rest of this block's steps."""
        if self.sprint is None or start == 0:
            return
        s = self.sprint
        mass, conf = self.cache.attn_mass[:start].cpu(), self.confidence[:start]
        importance = s.confidence_alpha * mass / mass.max().clamp(min=1e-12) + (
            1 - s.confidence_alpha
        ) * conf / conf.max().clamp(min=1e-12)
        is_image = (self.canvas[0, :start] >= self.model.cfg.image_token_offset).cpu()
        kept = []
        for group, ratio in ((is_image, s.image_keep_ratio), (~is_image, s.text_keep_ratio)):
            idx = group.nonzero().flatten()
            n = math.ceil(len(idx) * (s.keep_ratio if ratio is None else ratio))
            if n:
                kept.append(idx[importance[idx].topk(n).indices])
        view = torch.cat(kept).sort().values if kept else torch.zeros(0, dtype=torch.long)
        self.cache.view = view.to(self.canvas.device)
        self.cache.scoring = False

    def commit(self, tokens: torch.Tensor, start: int) -> None:
        if self.recompute:  # nothing is kept: the next step recomputes this block with the rest
            self._window(tokens, start)
            return
        assert start == self.cache.length, "blocks are committed in order"
        self.cache.view, self.cache.scoring = (
            None,
            False,
        )  # a finished block is stored against the full prefix
        ids, pos = self._window(tokens, start)
        with torch.no_grad():
            self.model(
                ids,
                pos,
                self._mask(start, ids.shape[1])[:, None],
                self.cache,
                commit=True,
                logits_from=ids.shape[1],
            )


def sample_rows(
    model: LLaDA2MoeModel,
    rows: list[list[int]],
    mask_id: int,
    settings: SamplerSettings,
    *,
    gen_length: int,
    generator: torch.Generator,
    guidance: Guidance | None = None,
    stop_ids: tuple[int, ...] = (),
    vocab_range: tuple[int, int] | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
    include_stop: bool = False,
) -> tuple[list[int], SamplerStats, int]:
    """Generate after rows[0] (its guidance companions in rows[1:], combined by `guidance`); returns
    the tokens, the sampler's statistics and the padded prompt length the sampler saw."""
    prompt = [mask_id] * (max(len(r) for r in rows) - len(rows[0])) + rows[0]  # the padded layout
    stats = SamplerStats()
    out = run(
        BackboneRunner(model, rows, mask_id, gen_length, settings),
        prompt,
        mask_id,
        settings,
        gen_length=gen_length,
        stop_ids=stop_ids,
        vocab_range=vocab_range,
        generator=generator,
        stats=stats,
        on_step=on_step,
        guidance=guidance,
        include_stop=include_stop,
    )
    return out, stats, len(prompt)
