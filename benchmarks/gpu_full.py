"""Full-size speed on one GPU against the physical floors of spec/performance.md §5, with random weights.

The real 16.3 B backbone (tests/fixtures/real/backbone_config.json) and the real turbo decoder, SigVQ and
FLUX VAE are built in bf16 directly on the device (meta, then filled in place; no download). Printed, each
with its floor and the ratio measured / floor:
  0. one MoE layer on that block (2 rows x 32 tokens) under each expert dispatch (grouped, batched, loop;
     llada_cli/models/moe_dispatch.py), and on a GPU the grouped layer replayed from a CUDA graph; floor
     the bytes of the experts it routes to, the shared expert and the router / bandwidth;
  1. one 32-token block forward with guidance (2 rows, 64 query tokens) after a 1,000-token prefix held in
     the exact KV cache, under each dispatch; floor B(64) / bandwidth (§5.1);
  2. the text-to-image backbone phase per size (cfg 2, 8 steps per block, block 32; MOE_DISPATCH as set,
     "auto" by default). Random weights never
     pass the threshold: NFE = 8 x blocks + a commit per block + one for the prompt; floor NFE x B(64)/BW;
  3. the turbo decoder per size: its 8 evaluations against the compute floor (§5.2), SigVQ and the VAE apart;
  4. peak CUDA memory per stage (the counter is reset before each stage).
The backbone is freed before the decoder is built, so each peak holds one model. Floors use the GPU named
by torch: H100 SXM (HBM3) 3.35 TB/s, H200 4.8 TB/s, 989 TFLOP/s dense bf16; other GPUs are compared with
the H100 SXM figures, and on a CPU the ratios mean nothing.
Run:  python benchmarks/gpu_full.py [--json out.json]          (real sizes on cuda: a few minutes on an H100)
      python benchmarks/gpu_full.py --config mid --device cpu --sizes 256 --repeats 1     (smoke test)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from backbone import (  # benchmarks/backbone.py, beside this script
    DISPATCHES,
    MID,
    REAL,
    auto_dispatch,
    cuda_graph,
    dispatch,
    forward_bytes,
    moe_bytes,
    random_model,
    sync,
    timed,
)
from text2image import MID_DECODER, on_device, randomise  # benchmarks/text2image.py

from llada_cli.models import llada2_moe
from llada_cli.models.llada2_moe import BackboneConfig
from llada_cli.pipelines import decode as decode_module
from llada_cli.pipelines.decode import LATENT_CHANNELS, DecoderStack
from llada_cli.pipelines.runner import BackboneRunner
from llada_cli.pipelines.text2image import TextToImage, grid_for
from llada_cli.sampling import guidance
from llada_cli.sampling.flow import sample_turbo
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.settings import DEFAULT_DECODER_STEPS, ImageSettings

PREFIX = 1000  # item 1: tokens already in the KV cache
PROMPT_TOKENS, UNCOND_TOKENS = 64, 32  # random stand-ins for the t2i prompt and its <uncondition> row
SETTINGS = ImageSettings(cfg=2.0, sampler=SamplerSettings(steps=8, block_length=32))
BLOCK = SETTINGS.sampler.block_length
TURBO_STEPS = DEFAULT_DECODER_STEPS["turbo"]
VAE_FLOP_1024 = 10.5e12  # §5.3, scaled by pixel count for other sizes
H100_SXM = (3.35e12, 989e12)
GPUS = {"H200": (4.8e12, 989e12), "H100 80GB HBM3": H100_SXM, "H100 SXM": H100_SXM}


@dataclass
class Limits:
    bandwidth: float  # bytes/s
    flops: float  # dense bf16 FLOP/s
    note: str


def limits_for(name: str, cuda: bool) -> Limits:
    for key, (bw, fl) in GPUS.items():
        if cuda and key in name:
            return Limits(bw, fl, f"floors for {key}")
    why = "CPU run: ratios are meaningless" if not cuda else f"{name} unknown: floors are H100 SXM's"
    return Limits(*H100_SXM, why)


def decoder_flops(config, px: int) -> float:
    """§5.2: 2 P (L U + R (X + C)) + 4 dim (L U^2 + R (X^2 + C^2)), P = 4 dim^2 + 3 dim ffn per layer;
    X latent tokens (px/16 squared), C condition tokens (4 per code, as many), U = X + C."""
    dim, layers, refiners = config.dim, config.n_layers, config.n_refiner_layers
    p = 4 * dim**2 + 3 * dim * int(dim / 3 * 8)
    x = c = (px // 16) ** 2
    u = x + c
    return 2 * p * (layers * u + refiners * (x + c)) + 4 * dim * (layers * u**2 + refiners * (x**2 + c**2))


class Report:
    """Rows printed as they come and kept for --json; per-stage peak CUDA memory."""

    def __init__(self, cuda: bool, header: dict):
        self.cuda, self.data = cuda, {**header, "rows": [], "peak_memory_gib": {}}

    def row(self, name: str, seconds: float, floor: float, **info) -> None:
        self.data["rows"].append({"name": name, "seconds": seconds, "floor_s": floor, **info})
        extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        print(
            f"{name:<34} {seconds * 1e3:10.2f} ms  floor {floor * 1e3:9.2f} ms  "
            f"ratio {seconds / floor:7.2f}  {extra}"
        )

    @contextmanager
    def stage(self, name: str):
        if self.cuda:
            sync()
            torch.cuda.reset_peak_memory_stats()
        yield
        if not self.cuda:
            print(f"{'':<34} peak memory after {name}: n/a on a CPU")
            return
        sync()
        peak = torch.cuda.max_memory_allocated() / 2**30
        self.data["peak_memory_gib"][name] = peak
        print(f"{'':<34} peak CUDA memory after {name}: {peak:.2f} GiB")


@dataclass
class Bench:
    device: str
    dtype: torch.dtype
    sizes: list[int]
    repeats: int
    limits: Limits
    report: Report

    @property
    def warm_up(self) -> bool:
        """On a CPU, no warm-up beyond `timed`'s one call and no 10x repeats, so smoke tests stay short."""
        return self.device == "cuda"


def moe_layer(model, bench: Bench) -> None:
    """One MoE layer on a guided block's 64 hidden states, under each dispatch (and a CUDA graph)."""
    moe = model.model.layers[1].mlp
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * BLOCK, model.cfg.hidden_size, generator=g).to(bench.device, bench.dtype)
    floor = moe_bytes(moe, x) / bench.limits.bandwidth
    runs = 10 * bench.repeats if bench.warm_up else bench.repeats
    for how in DISPATCHES:
        with dispatch(how):
            seconds = timed(lambda: moe(x), runs)
        bench.report.row(f"MoE layer 2 x 32 tok, {how}", seconds, floor, runs=runs)
    if bench.device == "cuda" and moe.dispatch_for(x) == "grouped":
        seconds = timed(cuda_graph(moe, x), runs)
        bench.report.row("MoE layer 2 x 32 tok, graph", seconds, floor, runs=runs)


def block_forward(model, bench: Bench, floor: float) -> None:
    g = torch.Generator().manual_seed(0)
    mask = model.cfg.image_token_offset - 1
    rows = torch.randint(0, mask, (2, PREFIX), generator=g)
    runner = BackboneRunner(model, rows.tolist(), mask, BLOCK, SETTINGS.sampler)
    runner.commit(rows[0], 0)
    block = torch.full((BLOCK,), mask, dtype=torch.long)
    runs = 10 * bench.repeats if bench.warm_up else bench.repeats
    for how in DISPATCHES:
        with dispatch(how):
            seconds = timed(lambda: runner.logits(block, PREFIX), runs)
        bench.report.row(f"block forward 2 x 32 tok, {how}", seconds, floor, prefix=PREFIX, runs=runs)


def t2i_backbone(model, bench: Bench, floor: float) -> None:
    g = torch.Generator().manual_seed(0)
    mask = model.cfg.image_token_offset - 1  # a text id: image codes are sampled from the image range only
    rows = [torch.randint(0, mask, (n,), generator=g).tolist() for n in (PROMPT_TOKENS, UNCOND_TOKENS)]
    gen = TextToImage(model, SimpleNamespace(ids={"mask": mask}))
    combine = guidance.simple(SETTINGS.cfg)

    def once(grid):
        sync()
        start = time.perf_counter()
        result = gen.generate_rows(rows, grid, SETTINGS.sampler, torch.Generator().manual_seed(0), combine)
        sync()
        return time.perf_counter() - start, result.stats

    if bench.warm_up:
        once((1, BLOCK))  # one block
    for px in bench.sizes:
        with bench.report.stage(f"t2i backbone {px}px"):
            runs = [once(grid_for(px, px)) for _ in range(bench.repeats)]
            seconds, stats = statistics.median(r[0] for r in runs), runs[0][1]
            nfe, denoise = stats.forward_passes, len(stats.accepted_per_pass)
            bench.report.row(
                f"t2i backbone {px}px", seconds, nfe * floor,
                nfe=nfe, denoising=denoise, commits=nfe - denoise, ms_per_forward=seconds / nfe * 1e3,
            )  # fmt: skip


def backbone_stages(fields: dict, bench: Bench) -> None:
    with bench.report.stage("backbone weights"):
        model = random_model(fields, bench.device, bench.dtype)
    n = 2 * BLOCK  # guidance rows x block
    b, formula = forward_bytes(model, n)
    floor = b / bench.limits.bandwidth
    print(f"backbone floor: {formula} / {bench.limits.bandwidth / 1e12:.2f} TB/s = {floor * 1e3:.2f} ms")
    print(f"MOE_DISPATCH {llada2_moe.MOE_DISPATCH!r} runs {auto_dispatch(model, n)!r} here (t2i rows)")
    bench.report.data["backbone_floor"] = dict(query_tokens=n, bytes=b, seconds=floor, formula=formula)
    with bench.report.stage("MoE layer"):
        moe_layer(model, bench)
    with bench.report.stage("block forward"):
        block_forward(model, bench, floor)
    t2i_backbone(model, bench, floor)


def build_decoder(config: str, code_vocab: int, device, dtype) -> DecoderStack:
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    from llada_cli.models.sigvq import SigVQ, SigVQConfig
    from llada_cli.models.vae import vae_init_kwargs
    from llada_cli.models.zimage import DecoderConfig
    from llada_cli.weights import real_configs

    width = 4096 if config == "real" else MID_DECODER["cap_feat_dim"]
    kwargs = (
        DecoderConfig.from_dict(real_configs.DECODER_TURBO).diffusers_kwargs(width)
        if config == "real"
        else MID_DECODER
    )
    sigvq = randomise(on_device(lambda: SigVQ(SigVQConfig(code_vocab, width)), device, dtype))
    decoder = randomise(on_device(lambda: ZImageTransformer2DModel(**kwargs), device, dtype))
    vae_kwargs = vae_init_kwargs(real_configs.VAE)
    vae = randomise(on_device(lambda: AutoencoderKL(**vae_kwargs), device, dtype), 0.01)
    return DecoderStack(sigvq, decoder, vae, "turbo", device, dtype)


def decode_once(stack: DecoderStack, px: int, g: torch.Generator, refine_once: bool = True) -> tuple[float, float, float]:
    """Seconds for SigVQ, the 8 turbo evaluations and the VAE, each closed by a device sync; the context
    refiner once per picture (as `DecoderStack.decode` runs it) or, for comparison, every step."""
    h, w = grid_for(px, px)
    codes = torch.randint(0, stack.code_vocab, (h * w,), generator=g).tolist()
    sync()
    t0 = time.perf_counter()
    cap = stack.conditioning(codes, h, w)
    sync()
    t1 = time.perf_counter()
    noise = torch.randn((1, LATENT_CHANNELS, 1, 4 * h, 4 * w), generator=g).to(stack.device)  # pixels / 8
    decode_module.REFINE_CONTEXT_ONCE = refine_once
    with decode_module._context_refined_once(stack.decoder):
        latents = sample_turbo(stack._velocity(cap, False), noise, TURBO_STEPS, g)
    decode_module.REFINE_CONTEXT_ONCE = True
    sync()
    t2 = time.perf_counter()
    stack.to_pixels(latents[:, :, 0])  # ends with a copy to the CPU
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def decoder_stages(config: str, code_vocab: int, bench: Bench) -> None:
    with bench.report.stage("decoder weights"):
        stack = build_decoder(config, code_vocab, bench.device, bench.dtype)
    g = torch.Generator().manual_seed(0)
    for px in bench.sizes:
        with bench.report.stage(f"decode {px}px"):
            if bench.warm_up:
                decode_once(stack, px, g)
            runs = [decode_once(stack, px, g) for _ in range(bench.repeats)]
            sigvq, dec, vae = (statistics.median(r[i] for r in runs) for i in range(3))
            flop = decoder_flops(stack.decoder.config, px)
            every = statistics.median(decode_once(stack, px, g, refine_once=False)[1] for _ in range(bench.repeats))
            bench.report.row(
                f"decoder {TURBO_STEPS} evals {px}px", dec, TURBO_STEPS * flop / bench.limits.flops,
                tflop_per_eval=flop / 1e12, ms_per_eval=dec / TURBO_STEPS * 1e3,
                refiner_every_step_ms=every * 1e3, every_step_over_once=every / dec,
            )  # fmt: skip
            vae_flop = VAE_FLOP_1024 * (px / 1024) ** 2
            bench.report.row(f"VAE {px}px", vae, vae_flop / bench.limits.flops, sigvq_ms=sigvq * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=("real", "mid"), default="real")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--sizes", default="512,1024", help="output sizes in pixels, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--skip-decoder", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)  # for every stage, the decoder's bare `sample_turbo` loop included
    cuda = args.device == "cuda"
    sizes = [int(s) for s in args.sizes.split(",")]
    for px in sizes:
        grid_for(px, px)  # a size that is not a multiple of 32 fails here, before anything is built
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    limits = limits_for(name, cuda)
    print(f"torch {torch.__version__}, {name}, {str(dtype).removeprefix('torch.')}, config {args.config}")
    print(
        f"{limits.note}: {limits.bandwidth / 1e12:.2f} TB/s, {limits.flops / 1e12:.0f} TFLOP/s; "
        f"ratio = measured / floor; median of {args.repeats} timed run(s)"
        + ("" if cuda else "; no warm-up runs")
    )
    header = {"gpu": name, "torch": torch.__version__, "config": args.config, "dtype": str(dtype)}
    report = Report(cuda, {**header, "limits": vars(limits), "sizes": sizes, "repeats": args.repeats})
    bench = Bench(args.device, dtype, sizes, args.repeats, limits, report)
    fields = json.loads(REAL.read_text()) if args.config == "real" else MID
    backbone_stages(fields, bench)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        print(f"backbone freed: {torch.cuda.memory_allocated() / 2**30:.2f} GiB still allocated")
    if not args.skip_decoder:
        vocab = BackboneConfig.from_dict(fields).image_vocab_size
        decoder_stages(args.config, vocab, bench)
    if args.json:
        args.json.write_text(json.dumps(report.data, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
