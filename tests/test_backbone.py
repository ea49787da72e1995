"""The backbone's math on the real modules: routing, partial RoPE, masks, MoE dispatch, exact KV cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llada_cli.checkpoint.components import load_backbone, load_state
from llada_cli.models.llada2_moe import (
    BackboneConfig,
    LLaDA2MoeModel,
    MoE,
    apply_partial_rope,
    block_causal_mask,
    rope_cos_sin,
    route,
)


@pytest.fixture(scope="module")
def model(tiny_dir):
    torch.manual_seed(0)
    return load_backbone(tiny_dir, dtype=torch.float32)


def test_routing_reference_vector():
    ids, weights = route(
        torch.tensor([[3.0, 2.0, 0.0, 0.0]]),
        torch.tensor([-2.0, -2.0, 0.8, 0.2]),
        top_k=2,
        n_group=2,
        topk_group=1,
        scale=2.5,
    )
    assert set(ids[0].tolist()) == {2, 3}
    assert torch.allclose(weights[0], torch.tensor([1.25, 1.25]))


def test_partial_rope_leaves_the_tail_untouched():
    x = torch.randn(2, 4, 10, 128)
    cos, sin = rope_cos_sin(torch.arange(10).expand(2, 10) + 5, 64, 600000.0, torch.float32)
    assert cos.shape[-1] == 64
    y = apply_partial_rope(x, cos, sin)
    assert torch.equal(y[..., 64:], x[..., 64:])
    assert not torch.allclose(y[..., :64], x[..., :64])
    # rotation keeps the norm of each rotated pair
    assert torch.allclose(y[..., :64].norm(dim=-1), x[..., :64].norm(dim=-1), atol=1e-5)


def test_block_causal_mask():
    m = block_causal_mask(64, 32)
    assert m[:32, :32].all() and not m[:32, 32:].any()  # block 0 sees only itself
    assert m[40].all()  # a token of block 1 sees both blocks, including later tokens of its own block
    assert m[49, 63] and not m[31, 32]


def test_loaded_experts_are_stacked_from_the_per_expert_tensors(model, tiny_dir):
    state = load_state(tiny_dir, "backbone", dtype=torch.float32)
    for e in (0, 17, 63):
        assert torch.equal(
            model.model.layers[2].mlp.up_proj[e], state[f"model.layers.2.mlp.experts.{e}.up_proj.weight"]
        )
    assert model.model.layers[1].mlp.gate.expert_bias.dtype == torch.float32


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by a dense routing matrix: the reference for dispatch."""
    cfg = moe.cfg
    flat = x.reshape(-1, x.shape[-1])
    ids, w = route(
        flat.float() @ moe.gate.weight.float().T,
        moe.gate.expert_bias,
        cfg.num_experts_per_tok,
        cfg.n_group,
        cfg.topk_group,
        cfg.routed_scaling_factor,
    )
    dense = torch.zeros(flat.shape[0], cfg.num_experts).scatter(1, ids, w)
    out = torch.zeros_like(flat)
    for e in range(cfg.num_experts):
        h = F.silu(flat @ moe.gate_proj[e].T) * (flat @ moe.up_proj[e].T)
        out += dense[:, e : e + 1] * (h @ moe.down_proj[e].T)
    return (out + moe.shared_experts(flat)).view(x.shape)


@pytest.mark.parametrize("dispatch", ["grouped", "batched", "loop"])
def test_moe_dispatch_equals_the_naive_all_experts_computation(model, monkeypatch, dispatch):
    from llada_cli.models import llada2_moe

    monkeypatch.setattr(llada2_moe, "MOE_DISPATCH", dispatch)
    moe = model.model.layers[1].mlp
    x = torch.randn(3, 37, model.cfg.hidden_size)
    assert torch.allclose(moe(x), naive_moe(moe, x), atol=1e-5)


def test_prefix_kv_cache_is_exact(model):
    L, total = 32, 96
    ids = torch.randint(0, model.cfg.vocab_size, (2, total))
    pos = torch.arange(total).expand(2, total)
    full = model(ids, pos, block_causal_mask(total, L)[None, None].expand(2, 1, total, total))
    cache = model.make_cache(2, total)
    for b in range(total // L):
        block = slice(b * L, (b + 1) * L)
        step = model(ids[:, block], pos[:, block], None, cache, commit=False)
        assert torch.allclose(step, full[:, block], atol=1e-5), b
        model(ids[:, block], pos[:, block], None, cache, commit=True)
    assert cache.length == total


def test_model_builds_from_the_real_config_on_meta():
    from llada_cli.weights import real_configs

    with torch.device("meta"):
        m = LLaDA2MoeModel(BackboneConfig.from_dict(real_configs.BACKBONE))
    params = sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
    assert params == 16_322_752_256


def test_fp8_experts_are_dequantised_at_load(tiny_dir, tiny_fp8_dir, model):
    fp8 = load_backbone(tiny_fp8_dir, dtype=torch.float32)
    ref, got = model.model.layers[2].mlp.gate_proj, fp8.model.layers[2].mlp.gate_proj
    assert got.dtype == torch.float32 and got.shape == ref.shape
    # e4m3 keeps 3 mantissa bits: within 2**-4 relative (plus a little for values in subnormal range)
    assert ((got - ref).abs() <= ref.abs() * 2**-4 + 1e-4).all() and not torch.equal(got, ref)
    assert torch.equal(
        fp8.model.layers[1].attention.dense.weight, model.model.layers[1].attention.dense.weight
    )
    ids = torch.randint(0, 700, (1, 32))
    logits = fp8(ids, torch.arange(32)[None], block_causal_mask(32, 32)[None, None])
    assert torch.isfinite(logits).all()


def test_chat_runs_on_the_tiny_fp8_checkpoint(capsys):
    from llada_cli.cli.app import run

    assert run(["chat", "hello", "--model", "tiny-fp8", "--max-tokens", "16", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "FP8 experts are dequantised" in err and '"answer"' in out


def test_compiled_backbone_gives_the_same_logits(tiny_dir):
    """--compile: dynamo captures each layer's attention and MLPs (the "eager" backend here: the same capture
    without a C++ toolchain); a growing cached prefix must not change the results."""
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.runtime.compile import compile_backbone

    eager = load_backbone(tiny_dir, dtype=torch.float32)
    compiled = load_backbone(tiny_dir, dtype=torch.float32)
    assert compile_backbone(compiled, backend="eager") == 2 * compiled.cfg.num_hidden_layers
    ids = torch.randint(0, 700, (2, 96))
    pos = torch.arange(96)[None].expand(2, -1)
    caches = eager.make_cache(2, 96), compiled.make_cache(2, 96)
    for start in (0, 32):  # the second block sees a longer prefix
        sl = slice(start, start + 32)
        a = eager(ids[:, sl], pos[:, sl], None, caches[0], commit=False)
        b = compiled(ids[:, sl], pos[:, sl], None, caches[1], commit=False)
        assert torch.allclose(a, b, atol=1e-5)
        eager(ids[:, sl], pos[:, sl], None, caches[0], commit=True)
        compiled(ids[:, sl], pos[:, sl], None, caches[1], commit=True)
