"""Backbone speed with random weights: MoE dispatch, the prefix KV cache, passes per token.

Prints, for a mid-size config that fits a 24 GB machine (4 layers, hidden 1024, 64 experts):
  (a) one MoE layer on a 32- and a 64-token block (one row, two CFG rows) under each dispatch of
      llada_cli/models/moe_dispatch.py (grouped, batched, loop), next to two baselines written here: a
      loop over all experts with a routing mask (the usual HF style) and every expert on every token;
      on a GPU also the grouped layer replayed from a CUDA graph; then the three dispatches from 128 to
      2,048 tokens (prompt prefills), where MOE_DISPATCH="auto" reads its thresholds;
  (b) one forward of a 32-token block after a long prefix: with the exact prefix cache under each
      dispatch vs recomputing the prefix (what the reference sampler does every step);
  (c) forward passes per generated token of the block-diffusion sampler, for the tiny and mid configs.
Each time in (a) and (b) is printed next to its floor, the bytes it must read over the memory bandwidth
(the GPU's spec sheet, or on a CPU a measured read bandwidth), as the ratio measured / floor.
Run:  python benchmarks/backbone.py [--prefix 1024] [--repeats 5]
On a GPU, the real 16.3 B config with random bf16 weights made on the device (no download):
      python benchmarks/backbone.py --config real --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from llada_cli.models import llada2_moe
from llada_cli.models.llada2_moe import BackboneConfig, LLaDA2MoeModel, MoE, block_causal_mask, route
from llada_cli.pipelines.runner import BackboneRunner
from llada_cli.sampling.block_diffusion import SamplerStats, run
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.weights.tiny import MID_BACKBONE

MID = MID_BACKBONE
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


DISPATCHES = ("grouped", "batched", "loop")
GPU_BANDWIDTH = {"H200": 4.8e12, "H100 80GB HBM3": 3.35e12, "H100 SXM": 3.35e12}  # spec sheets, bytes/s


@contextmanager
def dispatch(how: str):
    """Run the enclosed forwards with MOE_DISPATCH = how."""
    saved = llada2_moe.MOE_DISPATCH
    llada2_moe.MOE_DISPATCH = how
    try:
        yield
    finally:
        llada2_moe.MOE_DISPATCH = saved


def bandwidth(device: str) -> tuple[float, str]:
    """Bytes/s a floor divides by: a known GPU's spec sheet, else a measured read (a sum over 512 MiB)."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        for key, bw in GPU_BANDWIDTH.items():
            if key in name:
                return bw, f"{key} spec"
    x = torch.ones(2**27, device=device)
    seconds = timed(lambda: x.sum(), 5)
    return x.nbytes / seconds, "measured read"


def auto_dispatch(model, tokens: int = 32) -> str:
    """What MOE_DISPATCH runs for a block of `tokens` on this model's device and dtype."""
    weight = model.lm_head.weight
    probe = torch.zeros(tokens, model.cfg.hidden_size, device=weight.device, dtype=weight.dtype)
    return model.model.layers[1].mlp.dispatch_for(probe)


def expert_params(moe: MoE) -> int:
    return sum(w.shape[1] * w.shape[2] for w in (moe.gate_proj, moe.up_proj, moe.down_proj))


def itemsize(model) -> int:
    return model.lm_head.weight.element_size()


def moe_bytes(moe: MoE, x: torch.Tensor) -> int:
    """What one MoE layer must read for this input: the experts it routes to, the shared expert, the router."""
    touched = int(moe._route(x)[0].unique().numel())
    size = moe.shared_experts.up_proj.weight.element_size()
    shared = sum(p.numel() for p in moe.shared_experts.parameters())
    return size * (touched * expert_params(moe) + shared + moe.gate.weight.numel())


def forward_bytes(model, n: int) -> tuple[float, str]:
    """spec/performance.md §5.1: B(n) = bytes x [P_other + L x U(n) x P_expert], U(n) = E (1 - (1 - k/E)^n)
    experts touched per MoE layer over n query tokens. P_other is every weight but the routed experts and
    the embedding table (its rows are gathered, not read whole); in bf16 at n = 64 this reproduces the
    8.3 ms of the §5.1 table."""
    cfg = model.cfg
    moe = [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, MoE)]
    expert = expert_params(moe[0])
    routed = len(moe) * cfg.num_experts * expert
    other = sum(p.numel() for p in model.parameters()) - routed - model.model.word_embeddings.weight.numel()
    e, k = cfg.num_experts, cfg.num_experts_per_tok
    touched = e * (1 - (1 - k / e) ** n)
    size = itemsize(model)
    total = size * (other + len(moe) * touched * expert)
    formula = (
        f"B({n}) = {size} B x [{other / 1e6:.0f} M other + {len(moe)} layers x U = {touched:.1f} of {e} "
        f"experts x {expert / 1e6:.3f} M] = {total / 1e9:.2f} GB"
    )
    return total, formula


def kv_bytes(model, rows: int, prefix: int) -> int:
    """The cached keys and values a block forward reads."""
    cfg = model.cfg
    return (
        2 * cfg.num_hidden_layers * rows * cfg.num_key_value_heads * prefix * cfg.head_dim * itemsize(model)
    )


def cuda_graph(fn, x: torch.Tensor):
    """fn(x) captured once in a CUDA graph (warmed up on a side stream first); returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)
    return graph.replay


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


def moe_figures(moe: MoE, x: torch.Tensor, repeats: int, baselines=True) -> list[tuple[str, float]]:
    """(name, seconds) of one MoE layer on x [N, D] under each dispatch, then (with `baselines`) the
    grouped layer from a CUDA graph and the two baselines."""
    figures = []
    with torch.no_grad():
        for how in DISPATCHES:
            with dispatch(how):
                figures.append((how, timed(lambda: moe(x), repeats)))
        if not baselines:
            return figures
        if x.is_cuda and moe.dispatch_for(x) == "grouped":
            figures.append(("grouped, CUDA graph replay", timed(cuda_graph(moe, x), repeats)))
        figures.append(("masked loop over all experts", timed(lambda: loop_all_experts(moe, x), repeats)))
        figures.append(("every expert on every token", timed(lambda: dense_all_experts(moe, x), repeats)))
    return figures


def bench_moe(model, repeats: int, bandwidth: float) -> None:
    moe = model.model.layers[1].mlp
    weight = moe.shared_experts.up_proj.weight
    g = torch.Generator().manual_seed(0)
    for rows in (1, 2):
        x = torch.randn(rows * 32, model.cfg.hidden_size, generator=g).to(weight.device, weight.dtype)
        floor = moe_bytes(moe, x) / bandwidth
        print(f"(a) MoE layer, {rows} x 32 tokens, floor {floor * 1e3:.3f} ms:")
        for name, seconds in moe_figures(moe, x, repeats):
            print(f"      {name:<30} {seconds * 1e3:9.2f} ms  ratio {seconds / floor:7.1f}")


def bench_sizes(model, repeats: int, bandwidth: float, sizes=(128, 256, 512, 1024, 2048)) -> None:
    """Where the dispatches cross over as the token count grows (a prompt prefill): what the auto
    thresholds in llada2_moe.py are read from."""
    moe = model.model.layers[1].mlp
    weight = moe.shared_experts.up_proj.weight
    g = torch.Generator().manual_seed(0)
    print("(a) MoE layer by tokens, ms (ratio to floor):")
    for n in sizes:
        x = torch.randn(n, model.cfg.hidden_size, generator=g).to(weight.device, weight.dtype)
        floor = moe_bytes(moe, x) / bandwidth
        figures = moe_figures(moe, x, repeats, baselines=False)
        cells = [f"{how} {seconds * 1e3:8.1f} ({seconds / floor:5.1f})" for how, seconds in figures]
        print(f"      {n:5d} tokens: {'  '.join(cells)}  auto -> {moe.dispatch_for(x)}")


def bench_cache(model, prefix: int, repeats: int, bandwidth: float) -> None:
    L, total = 32, prefix + 32
    device = model.lm_head.weight.device
    ids = torch.randint(0, model.cfg.vocab_size, (1, total), device=device)
    pos = torch.arange(total, device=device)[None]
    settings = SamplerSettings(block_length=L)
    runner = BackboneRunner(model, [ids[0, :prefix].tolist()], mask_id=0, gen_length=L, settings=settings)
    weights, _ = forward_bytes(model, L)
    floor = (weights + kv_bytes(model, 1, prefix)) / bandwidth
    with torch.no_grad():
        runner.commit(ids[0, :prefix], 0)
        cached = {}
        for how in DISPATCHES:
            with dispatch(how):
                cached[how] = timed(lambda: runner.logits(ids[0, prefix:], prefix), repeats)
        mask = block_causal_mask(total, L, device)[None, None]
        full = timed(lambda: model(ids, pos, mask, logits_from=prefix), repeats)
        a = runner.logits(ids[0, prefix:], prefix)[0].float()
        b = model(ids, pos, mask, logits_from=prefix)[0].float()
        gap, agree = (a - b).abs().max(), (a.argmax(-1) == b.argmax(-1)).float().mean()
    full_floor = forward_bytes(model, total)[0] / bandwidth
    ours = cached[auto_dispatch(model)]
    print(f"(b) one 32-token block after a {prefix}-token prefix, floor {floor * 1e3:.2f} ms (cached):")
    for how, seconds in cached.items():
        print(f"      cached, {how:<22} {seconds * 1e3:9.1f} ms  ratio {seconds / floor:7.1f}")
    print(
        f"      recompute (auto dispatch)    {full * 1e3:9.1f} ms  ratio {full / full_floor:7.1f} "
        f"(floor {full_floor * 1e3:.2f} ms; {full / ours:.1f}x the cached auto); max |logit difference| "
        f"{float(gap):.3g} (largest |logit| {float(b.abs().max()):.3g}), same argmax at {float(agree):.0%}"
    )


def bench_passes(name: str, model, gen: int) -> None:
    prompt = torch.randint(0, model.cfg.image_token_offset, (40,)).tolist()
    warm = SamplerSettings(steps=4)
    run(BackboneRunner(model, [prompt], 0, 32, warm), prompt, 0, warm, gen_length=32)  # warm-up
    for steps in (32, 8):
        stats = SamplerStats()
        settings = SamplerSettings(block_length=32, steps=steps, threshold=0.95)
        with torch.no_grad():
            runner = BackboneRunner(model, [prompt], 0, gen, settings)
            out = run(runner, prompt, 0, settings, gen_length=gen, stats=stats)
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
    bw, source = bandwidth(args.device)
    auto = auto_dispatch(big)
    print(
        f"floors: bytes read / {bw / 1e9:.1f} GB/s ({source}); ratio = measured / floor; "
        f"MOE_DISPATCH {llada2_moe.MOE_DISPATCH!r} runs {auto!r} here"
    )
    bench_moe(big, args.repeats, bw)
    bench_sizes(big, args.repeats, bw)
    for prefix in sorted({args.prefix, 4096} if args.config == "real" else {args.prefix}):
        bench_cache(big, prefix, args.repeats, bw)
    if args.config == "mid":
        bench_passes("tiny", random_model(TINY), 256)
    bench_passes(args.config, big, 256 if args.config == "real" else 128)
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
