"""Opt-in `torch.compile` of the backbone's per-block work (`--compile`).

Each layer's attention and its dense or shared-expert MLP are compiled with dynamic shapes: the query
block is a fixed 32 tokens times the guidance rows, while the cached prefix grows block by block, so a
static compile would recompile at every block. The routed experts stay eager: their dispatch depends on
the routing (which experts, how many tokens each), which would break the graph anyway. Off by default
until it is measured faster on a GPU; it never changes results beyond floating-point reordering.
"""

from __future__ import annotations

COMPILE_BACKEND = "inductor"  # tests use "eager": the same graph capture, no C++ toolchain


def compile_backbone(model, backend: str | None = None) -> int:
    """Compile the per-layer modules in place; returns how many modules were compiled."""
    import torch

    from ..models.llada2_moe import MoE

    # Every layer's attention shares one code object and is specialised on its layer index and on
    # commit/step: allow those versions instead of dynamo's default limit of 8 (the rest would run eager).
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit, max(getattr(config, limit), 4 * len(model.model.layers) + 8))
    count = 0
    for layer in model.model.layers:
        mlp = layer.mlp.shared_experts if isinstance(layer.mlp, MoE) else layer.mlp
        for module in (layer.attention, mlp):
            if module is not None:
                module.forward = torch.compile(
                    module.forward, dynamic=True, backend=backend or COMPILE_BACKEND
                )
                count += 1
    return count
