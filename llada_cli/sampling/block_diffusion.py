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

from .sprint import SprintSettings


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


# What the last block does with the positions past prompt + gen_length (the padding up to a whole block):
# "denoise" (the official rule) predicts and commits them like any other masked position, so they take
# part in every step's quota and threshold and later steps see them, and the output is cut afterwards;
# "hold" (llada before 0.2) keeps them masked and out of the race.
TAIL_RULES = ("denoise", "hold")


@dataclass(frozen=True)
class SamplerConfig:
    gen_length: int = 2048
    block_length: int = 32
    steps: int = 32
    threshold: float = 0.95
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop_ids: tuple[int, ...] = ()
    vocab_range: tuple[int, int] | None = None  # allowed ids [lo, hi): text-only or image-only phases
    sprint: SprintSettings | None = None  # the lossy fast path; None keeps exact quota unmasking
    tail: str = "denoise"  # see TAIL_RULES

    def __post_init__(self) -> None:
        if self.block_length < 1 or self.steps < 1 or self.gen_length < 1:
            raise ValueError("block_length, steps and gen_length must be positive")
        if self.tail not in TAIL_RULES:
            raise ValueError(f"tail must be one of {TAIL_RULES}, not {self.tail!r}")

    @property
    def block_steps(self) -> int:
        """Steps per block: the official sampler never takes more steps than tokens it generates."""
        return min(self.steps, self.gen_length)


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


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator | None, banned: int | None = None
):
    """Tokens and their confidences (fp32 probability of the chosen token) for logits [L, V].

    `banned` (the mask id) can never be chosen: a position filled with it would stay masked forever."""
    logits = logits.float().clone()
    if cfg.vocab_range is not None:
        lo, hi = cfg.vocab_range
        logits[:, :lo] = float("-inf")
        logits[:, hi:] = float("-inf")
    if banned is not None:
        logits[:, banned] = float("-inf")
    if cfg.temperature <= 0:
        probs = logits.softmax(-1)
        conf, tokens = probs.max(-1)
    else:
        probs = _filter_top_k_top_p(logits / cfg.temperature, cfg.top_k, cfg.top_p).softmax(-1)
        tokens = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
        conf = probs.gather(-1, tokens[:, None]).squeeze(-1)
    if cfg.sprint is not None and cfg.sprint.confidence != "low":
        return tokens, conf, confidence_score(probs, cfg.sprint.confidence)
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
    """Positions to commit: every active one above threshold, or else the `quota` most confident."""
    conf = conf.masked_fill(~active, float("-inf"))
    high = (conf > threshold) & active
    if int(high.sum()) >= quota:
        return high
    k = min(quota, int(active.sum()))
    chosen = torch.zeros_like(active)
    chosen[conf.topk(k).indices] = True
    return chosen


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
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    stats: SamplerStats | None = None,
    guidance: Guidance | None = None,
) -> Iterator[StepEvent]:
    """Denoise `cfg.gen_length` tokens after `prompt`, yielding a StepEvent per step (see `run`)."""
    stats = stats if stats is not None else SamplerStats()
    began = time.perf_counter()
    L, P = cfg.block_length, len(prompt)
    total = P + cfg.gen_length
    canvas = torch.full((math.ceil(total / L) * L,), mask_id, dtype=torch.long)
    canvas[:P] = torch.tensor(prompt, dtype=torch.long)
    open_ = canvas == mask_id  # positions the sampler may write: not the prompt (nor its mask-id padding)
    open_[:P] = False
    if cfg.tail == "hold":
        open_[total:] = False
    if P // L:
        model.commit(canvas[: (P // L) * L], 0)
        stats.forward_passes += 1
    quotas = quota_schedule(L, cfg.block_steps)
    stops = torch.tensor(cfg.stop_ids, dtype=torch.long)
    stop_written = False
    for start in range((P // L) * L, total, L):
        block = canvas[start : start + L]
        for step, quota in enumerate(quotas + [L] * L):  # extra steps only if a quota could not be met
            active = (block == mask_id) & open_[start : start + L]
            if not active.any():
                break
            logits = _combine(model.logits(block, start), guidance)
            stats.forward_passes += 1
            tokens, conf, score = sample_tokens(logits, cfg, generator, banned=mask_id)
            if cfg.sprint is not None:
                move = adaptive_transfer(
                    score, conf, active.to(conf.device), len(quotas) - step, cfg.threshold
                )
            else:
                move = choose_transfer(conf, active.to(conf.device), quota, cfg.threshold)
            move, tokens = move.cpu(), tokens.cpu()  # the canvas lives on the CPU; L ids and flags cross
            if cfg.sprint is not None and hasattr(model, "prune"):  # the pruned cache weighs confidences
                model.observe(move.nonzero().flatten() + start, conf.cpu()[move])
                if step + 1 == cfg.sprint.warmup_steps:
                    model.prune(start)
            block[move] = tokens[move]
            stats.accepted_per_pass.append(int(move.sum()))
            stats.tokens_generated += int(move.sum())
            yield StepEvent(
                start, step, (move.nonzero().flatten() + start).tolist(), block.tolist(), P, total
            )
            stop_written = stop_written or bool(cfg.stop_ids and torch.isin(tokens[move], stops).any())
            if stop_written and _stopped(canvas, P, mask_id, stops):  # early exit, as after every step
                stats.seconds = time.perf_counter() - began
                return
        model.commit(block, start)
        stats.forward_passes += 1
        stats.committed_blocks += 1
    stats.seconds = time.perf_counter() - began


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
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    stats: SamplerStats | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
    guidance: Guidance | None = None,
    include_stop: bool = False,
) -> list[int]:
    """The first `gen_length` generated ids, up to the first stop id (kept with `include_stop`); never a
    mask id. Whatever the last block wrote past `gen_length` is cut here."""
    out: dict[int, int] = {}
    for event in generate(model, prompt, mask_id, cfg, generator, stats, guidance):
        for i, t in enumerate(event.block_tokens):
            out[event.block_start + i] = t
        if on_step:
            on_step(event)
    result = []
    for pos in range(len(prompt), len(prompt) + cfg.gen_length):
        t = out.get(pos, mask_id)
        if t == mask_id:
            break
        if t in cfg.stop_ids:
            if include_stop:
                result.append(t)
            break
        result.append(t)
    return result
