"""Text-to-image time per stage and per batch, with random weights.

1. The tiny checkpoint, a batch of 8 prompts at 256x256 through the real batch code: loads per stage
   (always one each) and seconds per image, so total time grows with images, not with reloads.
2. A mid-size random stack built in memory (backbone of benchmarks/backbone.py, a 6-layer width-512
   Z-Image decoder, the real FLUX VAE shape) at 512x512: seconds per stage (backbone, SigVQ, decoder
   evaluations, VAE) and backbone forward passes per image, for turbo and normal decoding.
Run:  python benchmarks/text2image.py
      python benchmarks/text2image.py --config real --device cuda   (real sizes at 1024x1024 on a GPU)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from backbone import machine  # benchmarks/backbone.py, beside this script

from llada_cli.batch import BatchOptions, BatchRunner, Events, TextToImageJob, plan_items
from llada_cli.engine import Engine
from llada_cli.hub.resolve import parse_model_ref, resolve
from llada_cli.inputs.tokenizer import TextTokenizer
from llada_cli.io.promptfiles import Entry
from llada_cli.models.sigvq import SigVQ, SigVQConfig
from llada_cli.models.vae import vae_init_kwargs
from llada_cli.pipelines.decode import DecoderStack
from llada_cli.pipelines.text2image import TextToImage, grid_for
from llada_cli.settings import DecoderSettings, ImageSettings, RunOptions
from llada_cli.weights import real_configs


class Timer(Events):
    def __init__(self):
        self.done_at: list[float] = []

    def done(self, item, record):
        self.done_at.append(time.perf_counter())


def tiny_batch(device: str, dtype) -> None:
    with tempfile.TemporaryDirectory() as out:
        engine = Engine("tiny", RunOptions(device=device))
        job = TextToImageJob(engine, ImageSettings(), DecoderSettings())
        timer = Timer()
        items = plan_items([Entry({"prompt": f"scene number {i}"}) for i in range(8)], 1, 0, 256, 256)
        start = time.perf_counter()
        BatchRunner(engine, job, BatchOptions(), folder=Path(out), manifest=None, events=timer).run(items)
        total = time.perf_counter() - start
    gaps = [b - a for a, b in zip([start] + timer.done_at[:-1], timer.done_at, strict=True)]
    print(
        f"tiny, 8 prompts at 256x256: {total:.2f} s in all; loads {dict(engine.loads)}; first image {gaps[0]:.2f} s "
        f"(includes loading), then {sum(gaps[1:]) / 7:.3f} s per image"
    )


def randomise(module: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.fill_(1.0) if "norm" in name and p.dim() == 1 else p.normal_(0.0, std)
    return module.eval()


MID_DECODER = dict(
    dim=512,
    n_layers=6,
    n_refiner_layers=1,
    n_heads=4,
    n_kv_heads=4,
    cap_feat_dim=512,
    axes_dims=[32, 48, 48],
    axes_lens=[32768, 1024, 1024],
)


def on_device(build, device: str, dtype) -> torch.nn.Module:
    """Build on meta, then allocate straight on the device in `dtype` (no CPU copy of a 12 GB decoder)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device("meta"):
        module = build()
    torch.set_default_dtype(previous)
    return module.to_empty(device=device)


def random_stack(config: str, device: str, dtype):
    import json

    from backbone import MID, REAL, random_model  # benchmarks/backbone.py, beside this script
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    from llada_cli.models.zimage import DecoderConfig

    fields = json.loads(REAL.read_text()) if config == "real" else MID
    model = random_model(fields, device, dtype)
    width = 4096 if config == "real" else 512
    dec_kwargs = (
        DecoderConfig.from_dict(real_configs.DECODER_TURBO).diffusers_kwargs(width)
        if config == "real"
        else MID_DECODER
    )
    sigvq = randomise(on_device(lambda: SigVQ(SigVQConfig(model.cfg.image_vocab_size, width)), device, dtype))
    decoder = randomise(on_device(lambda: ZImageTransformer2DModel(**dec_kwargs), device, dtype))
    vae = randomise(
        on_device(lambda: AutoencoderKL(**vae_init_kwargs(real_configs.VAE)), device, dtype), 0.01
    )
    return model, sigvq, decoder, vae


def stages(config: str, size: int, device: str, dtype) -> None:
    model, sigvq, decoder, vae = random_stack(config, device, dtype)
    root = resolve(parse_model_ref("tiny"), ("tokenizer",))
    tok = TextTokenizer(root / "tokenizer.json")  # ids by string; the larger backbones' vocab is wider
    gen = TextToImage(model, tok)
    grid = grid_for(size, size)
    result = gen.generate("a mountain lake at dawn", grid, ImageSettings(), seed=0)
    print(
        f"{config}, {size}x{size} ({grid[0]}x{grid[1]} codes, cfg 2.0, steps 8): backbone {result.seconds:.2f} s, "
        f"{result.stats.forward_passes} forward passes ({result.stats.forward_passes / len(result.codes):.3f} per code)"
    )
    for mode, steps in (("turbo", 8), ("normal", 50 if device.startswith("cuda") else 10)):
        stack = DecoderStack(sigvq, decoder, vae, mode, device, dtype)
        codes = [c % model.cfg.image_vocab_size for c in result.codes]
        _, t = stack.decode(codes, *grid, seed=0, steps=steps)
        print(
            f"{config} decoder {mode}: SigVQ {t.sigvq * 1e3:.1f} ms, {t.decoder_evaluations} evaluations in "
            f"{t.decoder:.2f} s ({t.decoder / t.decoder_evaluations:.3f} s each), VAE {t.vae:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", choices=("mid", "real"), default="mid")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    where = machine(args.device)
    print(f"torch {torch.__version__}, {where}, {str(dtype).removeprefix('torch.')}")
    tiny_batch(args.device, dtype)
    stages(args.config, 1024 if args.config == "real" else 512, args.device, dtype)
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
