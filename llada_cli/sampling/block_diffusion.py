"""Block-wise masked diffusion sampling, independent of any model class.

The canvas is the prompt followed by `gen_length` mask tokens, padded with more masks up to a multiple of
`block_length`. Blocks aligned to absolute positions are denoised left to right: each step predicts every
masked position of the current block and commits the confident ones (all above `threshold`, at least the
step's quota). Finished blocks are frozen. The official sampler (`generate_bd_image_logic`) treats the last
block's padding like any other masked position and cuts the output to `gen_length` only at the end; that is
the default here (`tail="denoise"`), and `tail="hold"` keeps the padding masked and out of the race.
The model is reached only through a `BlockModel` (logits for the current block, commit of a finished one),
so tests drive this loop with scripted fakes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .settings import SamplerSettings


class BlockModel(Protocol):
    def logits(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Logits [R, L, V] or [L, V] (fp32) for the block `tokens` [L] at absolute position `start`;
        R rows are the conditional row and its guidance companions, combined by the sampler's `guidance`."""

    def commit(self, tokens: torch.Tensor, start: int) -> None:
        """These positions are final: a cache may keep their keys and values from now on."""


def confidence_score(probs: torch.Tensor, mode: str) -> torch.Tensor:
    """How sure each position is, from its probabilities [L, V]: used to rank positions for unmasking."""
    if mode == "low":
        return probs.max(-1).values
    if mode == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[:, 0] - top2[:, 1]
    return (probs * probs.clamp(min=1e-30).log()).sum(-1)  # negative entropy: higher is surer


@dataclass
class SamplerStats:
    forward_passes: int = 0
    committed_blocks: int = 0
    tokens_generated: int = 0
    seconds: float = 0.0
    accepted_per_pass: list[int] = field(default_factory=list)

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens_generated / self.forward_passes if self.forward_passes else 0.0


@dataclass(frozen=True)
class StepEvent:
    """Emitted after every step: which positions of the block were just written, and the block so far."""

    block_start: int
    step: int
    positions: list[int]
    block_tokens: list[int]
    prompt_len: int  # where the generated part starts, so viewers need not re-encode the prompt
    end: int  # prompt_len + gen_length: tokens from here on (the last block's tail) are cut from the output


def quota_schedule(block_length: int, steps: int) -> list[int]:
    """How many tokens each step must commit at least: L//S each, the remainder on the first steps."""
    steps = min(steps, block_length)
    return [block_length // steps + (s < block_length % steps) for s in range(steps)]


def _filter(logits: torch.Tensor, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """Top-k, then top-p (the smallest set reaching that mass), then min-p (tokens below min_p times the
    best one's probability), each on what the one before kept, all on logits already divided by the
    temperature (the official order for top-k/top-p; min-p follows it)."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    if min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    settings: SamplerSettings,
    generator: torch.Generator | None,
    banned: int | None = None,
    vocab_range: tuple[int, int] | None = None,
):
    """Tokens and their confidences (fp32 probability of the chosen token) for logits [L, V].

    `banned` (the mask id) can never be chosen: a position filled with it would stay masked forever;
    `vocab_range` [lo, hi) keeps a text-only or image-only phase in its vocabulary."""
    logits = logits.float().clone()
    if vocab_range is not None:
        lo, hi = vocab_range
        logits[:, :lo] = float("-inf")
        logits[:, hi:] = float("-inf")
    if banned is not None:
        logits[:, banned] = float("-inf")
    s = settings
    if s.temperature <= 0:
        probs = logits.softmax(-1)
        conf, tokens = probs.max(-1)
    else:
        probs = _filter(logits / s.temperature, s.top_k, s.top_p, s.min_p).softmax(-1)
        tokens = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
        conf = probs.gather(-1, tokens[:, None]).squeeze(-1)
    if s.sprint is not None and s.sprint.confidence != "low":
        return tokens, conf, confidence_score(probs, s.sprint.confidence)
    return tokens, conf, conf


def adaptive_transfer(score, conf, active, steps_left: int, threshold: float) -> torch.Tensor:
    """SPRINT: the k = ceil(masked / steps left) best-ranked positions, and every one above threshold."""
    n_active = int(active.sum())
    k = min(n_active, math.ceil(n_active / max(steps_left, 1)))
    chosen = (conf > threshold) & active
    if k:
        chosen[score.masked_fill(~active, float("-inf")).topk(k).indices] = True
    return chosen


def choose_transfer(conf: torch.Tensor, active: torch.Tensor, quota: int, threshold: float) -> torch.Tensor:
    """Positions to commit: every active one above threshold, or else the `quota` most confident.

    Without a host sync (the GPU never waits on a count): the comparison with the quota stays on the
    device, and topk takes the quota itself, the inactive positions (at -inf) dropped after, which picks
    exactly what topk(min(quota, active count)) picks."""
    conf = conf.masked_fill(~active, float("-inf"))
    high = (conf > threshold) & active
    top = torch.zeros_like(active)
    top[conf.topk(min(quota, conf.shape[0])).indices] = True
    return torch.where(high.sum() >= quota, high, top & active)


Guidance = Callable[[torch.Tensor], torch.Tensor]


def _combine(logits: torch.Tensor, guidance: Guidance | None) -> torch.Tensor:
    """Rows [R, L, V] -> [L, V]: the guidance combiner, or the conditional row when there is none."""
    if logits.dim() == 2:
        return logits
    return guidance(logits) if guidance is not None else logits[0]


def generate(
    model: BlockModel,
    prompt: list[int],
    mask_id: int,
    settings: SamplerSettings,
    *,
    gen_length: int,
    stop_ids: tuple[int, ...] = (),
    vocab_range: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    stats: SamplerStats | None = None,
    guidance: Guidance | None = None,
) -> Iterator[StepEvent]:
    """Denoise `gen_length` tokens after `prompt`, yielding a StepEvent per step (see `run`)."""
    if gen_length < 1:
        raise ValueError("gen_length must be positive")
    stats = stats if stats is not None else SamplerStats()
    began = time.perf_counter()
    L, P = settings.block_length, len(prompt)
    total = P + gen_length
    canvas = torch.full((math.ceil(total / L) * L,), mask_id, dtype=torch.long)
    canvas[:P] = torch.tensor(prompt, dtype=torch.long)
    open_ = canvas == mask_id  # positions the sampler may write: not the prompt (nor its mask-id padding)
    open_[:P] = False
    if settings.tail == "hold":
        open_[total:] = False
    if P // L:
        model.commit(canvas[: (P // L) * L], 0)
        stats.forward_passes += 1
    quotas = quota_schedule(L, min(settings.steps, gen_length))  # official: never more steps than tokens
    stops = torch.tensor(stop_ids, dtype=torch.long)
    stop_written = False
    for start in range((P // L) * L, total, L):
        block = canvas[start : start + L]
        for step, quota in enumerate(quotas + [L] * L):  # extra steps only if a quota could not be met
            active = (block == mask_id) & open_[start : start + L]
            if not active.any():
                break
            logits = _combine(model.logits(block, start), guidance)
            stats.forward_passes += 1
            tokens, conf, score = sample_tokens(logits, settings, generator, mask_id, vocab_range)
            move = _transfer(settings, score, conf, active.to(conf.device), quota, len(quotas) - step)
            move, tokens = move.cpu(), tokens.cpu()  # the canvas lives on the CPU; L ids and flags cross
            if settings.sprint is not None and hasattr(model, "prune"):
                _observe(model, settings.sprint, move, conf, start, step)
            block[move] = tokens[move]
            stats.accepted_per_pass.append(int(move.sum()))
            stats.tokens_generated += int(move.sum())
            yield StepEvent(
                start, step, (move.nonzero().flatten() + start).tolist(), block.tolist(), P, total
            )
            stop_written = stop_written or bool(stop_ids and torch.isin(tokens[move], stops).any())
            if stop_written and _stopped(canvas, P, mask_id, stops):  # early exit, as after every step
                stats.seconds = time.perf_counter() - began
                return
        model.commit(block, start)
        stats.forward_passes += 1
        stats.committed_blocks += 1
    stats.seconds = time.perf_counter() - began


def _transfer(settings: SamplerSettings, score, conf, active, quota: int, steps_left: int) -> torch.Tensor:
    """The positions a step commits: SPRINT's adaptive k, or the quota rule."""
    if settings.sprint is not None:
        return adaptive_transfer(score, conf, active, steps_left, settings.threshold)
    return choose_transfer(conf, active, quota, settings.threshold)


def _observe(model, sprint, move: torch.Tensor, conf: torch.Tensor, start: int, step: int) -> None:
    """SPRINT's pruned cache weighs the confidences of what was written, and prunes after the warm-up."""
    model.observe(move.nonzero().flatten() + start, conf.cpu()[move])
    if step + 1 == sprint.warmup_steps:
        model.prune(start)


def _stopped(canvas: torch.Tensor, P: int, mask_id: int, stops: torch.Tensor) -> bool:
    """A stop token has been written and every position before it is decided."""
    gen = canvas[P:]
    is_stop = torch.isin(gen, stops)
    if not is_stop.any():
        return False
    first = int(is_stop.int().argmax())
    return not bool((gen[:first] == mask_id).any())


def run(
    model: BlockModel,
    prompt: list[int],
    mask_id: int,
    settings: SamplerSettings,
    *,
    on_step: Callable[[StepEvent], None] | None = None,
    include_stop: bool = False,
    **request,
) -> list[int]:
    """The first `gen_length` generated ids, up to the first stop id (kept with `include_stop`); never a
    mask id. Whatever the last block wrote past `gen_length` is cut here. `request` holds `generate`'s
    keywords (gen_length, stop_ids, vocab_range, generator, stats, guidance)."""
    out: dict[int, int] = {}
    events = generate(model, prompt, mask_id, settings, **request)  # gen_length, stop_ids, ...
    for event in events:
        for i, t in enumerate(event.block_tokens):
            out[event.block_start + i] = t
        if on_step:
            on_step(event)
    result = []
    stop_ids = request.get("stop_ids", ())
    for pos in range(len(prompt), len(prompt) + request["gen_length"]):
        t = out.get(pos, mask_id)
        if t == mask_id:
            break
        if t in stop_ids:
            if include_stop:
                result.append(t)
            break
        result.append(t)
    return result
