"""Routed-expert dispatch as pure functions: which (token, slot) pairs go to which expert, and three ways to
run the experts on them. `MoE.forward` (llada2_moe.py) routes, sorts and picks one.

Shapes: N tokens, D hidden, W expert width, E experts, k experts per token, M = N * k (token, slot) pairs,
G touched experts (G <= E). Expert stacks are [E, out, in] like nn.Linear weights.

  grouped  torch._grouped_mm over the pairs sorted by expert, with the cumulative group ends computed on
           the device: each expert's weights are read where they lie, no copy, no padding, and no
           host-device sync, so a layer can be captured in a CUDA graph. Stacks that are not plain tensors
           (quantized PackedWeights, HostExperts) give back only their touched experts, dequantized or
           moved; the grouped matmuls then run on that compact stack (one sync to learn which).
  batched  the touched experts gathered into new tensors, each padded to the busiest one's token count,
           one bmm chain. The former GPU path; kept as a named fallback.
  loop     one matmul chain per touched expert on its own tokens. The former CPU path; kept as a fallback.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

GROUPED_DTYPES_CPU = (torch.float32, torch.bfloat16, torch.float16)
# CUTLASS grouped GEMM kernels exist for Hopper and datacenter Blackwell; elsewhere torch falls back to a
# loop that copies the offsets to the host (a sync, and no CUDA graph).
GROUPED_CUDA_MAJORS = (9, 10)


class Pairs(NamedTuple):
    """The M = N * k (token, slot) pairs sorted by expert; stable, so tokens stay in order within one."""

    order: torch.Tensor  # [M] int64: index into the flattened [N, k] routing
    tokens: torch.Tensor  # [M] int64: the token of each pair
    experts: torch.Tensor  # [M] int64: its expert, ascending
    weights: torch.Tensor  # [M] its routing weight, in the compute dtype
    k: int  # experts per token


def sort_pairs(ids: torch.Tensor, weights: torch.Tensor) -> Pairs:
    """ids [N, k], weights [N, k] -> the pairs grouped by expert. Device-side only: no sync."""
    flat_ids = ids.flatten()
    order = flat_ids.argsort(stable=True)
    k = ids.shape[1]
    return Pairs(order, order // k, flat_ids[order], weights.flatten()[order], k)


def group_ends(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Sorted expert ids [M] -> int32 [E]: where each expert's run of pairs ends (the `offs` of
    torch._grouped_mm; an expert with no pair gets an empty group). A search, not a count: no sync."""
    every = torch.arange(num_experts, device=experts.device, dtype=experts.dtype)
    return torch.searchsorted(experts, every, right=True, out_int32=True)


def touched(experts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted expert ids [M] -> (distinct experts [G], pairs per expert [G]). The shape depends on the
    routing, so on a GPU this waits for it: used by the paths that gather experts."""
    return experts.unique_consecutive(return_counts=True)


def swiglu(xs, w_gate, w_up, w_down, weights):
    """xs [..., n, D] through one expert (or a batch of them). The routing weight scales the SwiGLU
    intermediate before down_proj, as the reference kernel does."""
    h = F.silu(xs @ w_gate.mT) * (xs @ w_up.mT)
    return (h * weights[..., None]) @ w_down.mT


def grouped_swiglu(xs, w_gate, w_up, w_down, ends, weights) -> torch.Tensor:
    """xs [M, D] sorted by expert, stacks [G, out, in] read in place, ends int32 [G] -> [M, D].
    The same math as `swiglu`, one grouped matmul per projection."""
    h = F.silu(torch._grouped_mm(xs, w_gate.mT, offs=ends)) * torch._grouped_mm(xs, w_up.mT, offs=ends)
    return torch._grouped_mm(h * weights[:, None], w_down.mT, offs=ends)  # [M, W] -> [M, D]


def unsort_sum(y: torch.Tensor, order: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Per-pair outputs [M, D] in expert order -> [N, D] fp32, each token's k slots summed in slot order.
    A scatter by position instead of an atomic index_add: the same result on every run."""
    by_pair = torch.empty_like(y).index_copy_(0, order, y)  # [N * k, D], token-major
    return by_pair.view(n, k, y.shape[-1]).sum(1, dtype=torch.float32)


def run_grouped(flat, pairs: Pairs, stacks) -> torch.Tensor:
    """flat [N, D] -> routed output [N, D] fp32. Plain tensor stacks are read in place with no sync;
    other stacks (quantized, host-held) give back their touched experts, which run as compact groups."""
    if all(isinstance(s, torch.Tensor) for s in stacks):
        ends = group_ends(pairs.experts, stacks[0].shape[0])
    else:
        experts, counts = touched(pairs.experts)
        stacks = [s[experts] for s in stacks]  # dequantizes (or moves) only these
        ends = counts.cumsum(0, dtype=torch.int32)
    y = grouped_swiglu(flat[pairs.tokens], *stacks, ends, pairs.weights)
    return unsort_sum(y, pairs.order, flat.shape[0], pairs.k)


def run_loop(flat, pairs: Pairs, stacks) -> torch.Tensor:
    """Many tokens: one matmul chain per touched expert on its own tokens -> [N, D] fp32."""
    gate, up, down = stacks
    experts, counts = touched(pairs.experts)
    out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
    start = 0
    for expert, count in zip(experts.tolist(), counts.tolist(), strict=True):
        sel = slice(start, start + count)
        tokens = pairs.tokens[sel]
        y = swiglu(flat[tokens], gate[expert], up[expert], down[expert], pairs.weights[sel])
        out.index_add_(0, tokens, y.float())
        start += count
    return out


def run_batched(flat, pairs: Pairs, stacks) -> torch.Tensor:
    """Few tokens: the touched experts' weights gathered into one batched matmul chain, each expert's
    tokens padded to the busiest expert's count -> [N, D] fp32."""
    experts, counts = touched(pairs.experts)
    n_touched, capacity = experts.shape[0], int(counts.max()) if counts.numel() else 0
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(n_touched, device=flat.device), counts)  # [M]
    rank = torch.arange(pairs.tokens.shape[0], device=flat.device) - starts[group]
    xs = flat.new_zeros(n_touched, capacity, flat.shape[1])
    xs[group, rank] = flat[pairs.tokens]
    ws = pairs.weights.new_zeros(n_touched, capacity)
    ws[group, rank] = pairs.weights
    y = swiglu(xs, *(s[experts] for s in stacks), ws)  # [G, capacity, D]
    out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
    return out.index_add_(0, pairs.tokens, y[group, rank].float())


RUNS = {"grouped": run_grouped, "batched": run_batched, "loop": run_loop}
DISPATCHES = tuple(RUNS)


def grouped_supported(device: torch.device, dtype: torch.dtype, dims: tuple[int, ...]) -> bool:
    """Whether torch._grouped_mm runs these matmuls without a host sync: bf16 on Hopper/Blackwell GPUs;
    fp32/bf16/fp16 on the CPU (where compile's shape check accepts bf16 only); every row stride a
    multiple of 16 bytes."""
    if not hasattr(torch, "_grouped_mm") or any(d * dtype.itemsize % 16 for d in dims):
        return False
    if device.type == "cuda":
        major = torch.cuda.get_device_capability(device)[0]
        return dtype == torch.bfloat16 and major in GROUPED_CUDA_MAJORS
    if device.type == "cpu":
        compiling = torch.compiler.is_compiling()
        return dtype == torch.bfloat16 if compiling else dtype in GROUPED_DTYPES_CPU
    return False
