"""Backbone speed on CPU with random weights: MoE dispatch, the prefix KV cache, passes per token.

Prints, for a mid-size config that fits a 24 GB machine (4 layers, hidden 1024, 64 experts):
  (a) one MoE layer on a 32-token block: our touched-expert dispatch vs two baselines written here,
      a loop over all experts with a routing mask (the usual HF style) and every expert on every token;
  (b) one forward of a 32-token block after a long prefix: with the exact prefix cache vs recomputing
      the prefix (what the reference sampler does every step);
  (c) forward passes per generated token of the block-diffusion sampler, for the tiny and mid configs.
Run:  python benchmarks/backbone.py [--prefix 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from llada_cli.models.llada2_moe import BackboneConfig, LLaDA2MoeModel, block_causal_mask, route
from llada_cli.pipelines.runner import BackboneRunner
from llada_cli.sampling.block_diffusion import SamplerConfig, SamplerStats, run

MID = dict(
    vocab_size=8192,
    hidden_size=1024,
    intermediate_size=2816,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=128,
    num_experts=64,
    num_experts_per_tok=8,
    n_group=8,
    topk_group=4,
    moe_intermediate_size=512,
    image_token_offset=4096,
    first_k_dense_replace=1,
    routed_scaling_factor=2.5,
)
TINY = dict(
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    num_experts=64,
    num_experts_per_tok=4,
    n_group=8,
    topk_group=4,
    moe_intermediate_size=32,
    image_token_offset=768,
    first_k_dense_replace=1,
    routed_scaling_factor=2.5,
)


def random_model(fields: dict) -> LLaDA2MoeModel:
    torch.manual_seed(0)
    model = LLaDA2MoeModel(BackboneConfig.from_dict(fields))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("norm.weight") else torch.randn_like(p) * 0.02)
    return model.eval()


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loop_all_experts(moe, x):
    """Baseline: every expert in turn, picking its tokens with a mask (empty experts still cost a check)."""
    cfg = moe.cfg
    ids, w = route(
        x.float() @ moe.gate.weight.float().T,
        moe.gate.expert_bias,
        cfg.num_experts_per_tok,
        cfg.n_group,
        cfg.topk_group,
        cfg.routed_scaling_factor,
    )
    out = torch.zeros_like(x)
    for e in range(cfg.num_experts):
        token, slot = (ids == e).nonzero(as_tuple=True)
        if token.numel() == 0:
            continue
        xs = x[token]
        h = F.silu(xs @ moe.gate_proj[e].T) * (xs @ moe.up_proj[e].T)
        out.index_add_(0, token, (h @ moe.down_proj[e].T) * w[token, slot, None])
    return out + moe.shared_experts(x)


def dense_all_experts(moe, x):
    cfg = moe.cfg
    ids, w = route(
        x.float() @ moe.gate.weight.float().T,
        moe.gate.expert_bias,
        cfg.num_experts_per_tok,
        cfg.n_group,
        cfg.topk_group,
        cfg.routed_scaling_factor,
    )
    dense = torch.zeros(x.shape[0], cfg.num_experts).scatter(1, ids, w)
    out = torch.zeros_like(x)
    for e in range(cfg.num_experts):
        h = F.silu(x @ moe.gate_proj[e].T) * (x @ moe.up_proj[e].T)
        out += dense[:, e : e + 1] * (h @ moe.down_proj[e].T)
    return out + moe.shared_experts(x)


def bench_moe(model, repeats: int) -> None:
    moe = model.model.layers[1].mlp
    x = torch.randn(32, model.cfg.hidden_size)
    with torch.no_grad():
        ours = timed(lambda: moe(x), repeats)
        loop = timed(lambda: loop_all_experts(moe, x), repeats)
        dense = timed(lambda: dense_all_experts(moe, x), repeats)
    print(
        f"(a) MoE layer, 32 tokens: ours {ours * 1e3:.2f} ms | loop over all experts {loop * 1e3:.2f} ms "
        f"({loop / ours:.2f}x) | every expert on every token {dense * 1e3:.2f} ms ({dense / ours:.2f}x)"
    )


def bench_cache(model, prefix: int, repeats: int) -> None:
    L, total = 32, prefix + 32
    ids = torch.randint(0, model.cfg.vocab_size, (1, total))
    pos = torch.arange(total)[None]
    runner = BackboneRunner(model, [ids[0, :prefix].tolist()], mask_id=0, gen_length=L, block=L)
    with torch.no_grad():
        runner.commit(ids[0, :prefix], 0)
        cached = timed(lambda: runner.logits(ids[0, prefix:], prefix), repeats)
        mask = block_causal_mask(total, L)[None, None]
        full = timed(lambda: model(ids, pos, mask, logits_from=prefix), repeats)
    print(
        f"(b) one 32-token block after a {prefix}-token prefix: cached {cached * 1e3:.1f} ms | "
        f"recompute {full * 1e3:.1f} ms ({full / cached:.1f}x)"
    )


def bench_passes(name: str, model, gen: int) -> None:
    prompt = torch.randint(0, model.cfg.image_token_offset, (40,)).tolist()
    for steps in (32, 8):
        stats = SamplerStats()
        cfg = SamplerConfig(gen_length=gen, block_length=32, steps=steps, threshold=0.95)
        with torch.no_grad():
            out = run(BackboneRunner(model, [prompt], 0, gen, 32), prompt, 0, cfg, None, stats)
        print(
            f"(c) {name}, steps {steps}: {stats.forward_passes} passes for {len(out)} tokens = "
            f"{stats.forward_passes / max(len(out), 1):.3f} passes/token ({stats.seconds:.2f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU")
    mid = random_model(MID)
    bench_moe(mid, args.repeats)
    bench_cache(mid, args.prefix, args.repeats)
    bench_passes("tiny", random_model(TINY), 256)
    bench_passes("mid", mid, 128)


if __name__ == "__main__":
    main()
