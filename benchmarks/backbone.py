"""Backbone speed on CPU with random weights: MoE dispatch, the prefix KV cache, passes per token.

Prints, for a mid-size config that fits a 24 GB machine (4 layers, hidden 1024, 64 experts):
  (a) one MoE layer on a 32-token block: our touched-expert dispatch vs two baselines written here,
      a loop over all experts with a routing mask (the usual HF style) and every expert on every token;
  (b) one forward of a 32-token block after a long prefix: with the exact prefix cache vs recomputing
      the prefix (what the reference sampler does every step);
  (c) forward passes per generated token of the block-diffusion sampler, for the tiny and mid configs.
Run:  python benchmarks/backbone.py [--prefix 1024] [--repeats 5]
On a GPU, the real 16.3 B config with random bf16 weights made on the device (no download):
      python benchmarks/backbone.py --config real --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

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


REAL = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "real" / "backbone_config.json"


def random_model(fields: dict, device: str = "cpu", dtype=torch.float32) -> LLaDA2MoeModel:
    """Random weights made directly on the device: built on meta, then filled in place."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device("meta"):
        model = LLaDA2MoeModel(BackboneConfig.from_dict(fields))
    torch.set_default_dtype(previous)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if name.endswith("norm.weight") else p.normal_(0.0, 0.02)
        for b in model.buffers():
            b.zero_()
    return model.eval()


def machine(device: str) -> str:
    """What ran the figures: the GPU's name, or the CPU and its threads."""
    return (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
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
        out.index_add_(0, token, (h @ moe.down_proj[e].T) * w[token, slot, None].to(x.dtype))
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
    dense = torch.zeros(x.shape[0], cfg.num_experts, device=x.device).scatter(1, ids, w).to(x.dtype)
    out = torch.zeros_like(x)
    for e in range(cfg.num_experts):
        h = F.silu(x @ moe.gate_proj[e].T) * (x @ moe.up_proj[e].T)
        out += dense[:, e : e + 1] * (h @ moe.down_proj[e].T)
    return out + moe.shared_experts(x)


def bench_moe(model, repeats: int) -> None:
    moe = model.model.layers[1].mlp
    x = torch.randn(32, model.cfg.hidden_size, device=moe.gate_proj.device, dtype=moe.gate_proj.dtype)
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
    device = model.lm_head.weight.device
    ids = torch.randint(0, model.cfg.vocab_size, (1, total), device=device)
    pos = torch.arange(total, device=device)[None]
    runner = BackboneRunner(model, [ids[0, :prefix].tolist()], mask_id=0, gen_length=L, block=L)
    with torch.no_grad():
        runner.commit(ids[0, :prefix], 0)
        cached = timed(lambda: runner.logits(ids[0, prefix:], prefix), repeats)
        mask = block_causal_mask(total, L, device)[None, None]
        full = timed(lambda: model(ids, pos, mask, logits_from=prefix), repeats)
        a = runner.logits(ids[0, prefix:], prefix)[0].float()
        b = model(ids, pos, mask, logits_from=prefix)[0].float()
        gap, agree = (a - b).abs().max(), (a.argmax(-1) == b.argmax(-1)).float().mean()
    print(
        f"(b) one 32-token block after a {prefix}-token prefix: cached {cached * 1e3:.1f} ms | "
        f"recompute {full * 1e3:.1f} ms ({full / cached:.1f}x); max |logit difference| {float(gap):.3g} "
        f"(largest |logit| {float(b.abs().max()):.3g}), "
        f"same argmax at {float(agree):.0%} of positions"
    )


def bench_passes(name: str, model, gen: int) -> None:
    prompt = torch.randint(0, model.cfg.image_token_offset, (40,)).tolist()
    run(
        BackboneRunner(model, [prompt], 0, 32, 32), prompt, 0, SamplerConfig(gen_length=32, steps=4)
    )  # warm-up
    for steps in (32, 8):
        stats = SamplerStats()
        cfg = SamplerConfig(gen_length=gen, block_length=32, steps=steps, threshold=0.95)
        with torch.no_grad():
            out = run(BackboneRunner(model, [prompt], 0, gen, 32), prompt, 0, cfg, None, stats)
        print(
            f"(c) {name}, steps {steps}: {stats.forward_passes} passes for {len(out)} tokens = "
            f"{stats.forward_passes / max(len(out), 1):.3f} passes/token ({stats.seconds:.2f} s, "
            f"{len(out) / stats.seconds:.1f} tokens/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", choices=("mid", "real"), default="mid")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.dtype)
    dtype = dtype or (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    where = machine(args.device)
    print(f"torch {torch.__version__}, {where}, {str(dtype).removeprefix('torch.')}, config {args.config}")
    fields = json.loads(REAL.read_text()) if args.config == "real" else MID
    big = random_model(fields, args.device, dtype)
    bench_moe(big, args.repeats)
    for prefix in sorted({args.prefix, 4096} if args.config == "real" else {args.prefix}):
        bench_cache(big, prefix, args.repeats)
    if args.config == "mid":
        bench_passes("tiny", random_model(TINY), 256)
    bench_passes(args.config, big, 256 if args.config == "real" else 128)
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
