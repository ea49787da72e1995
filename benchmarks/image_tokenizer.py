"""SigLIP-VQ encoder speed and memory with random weights, and how often a bf16 and an fp32 tokenizer agree.

Encodes one 800x800 image (50x50 = 2500 patches, the single-image maximum) and two images at the several-
images budget (448² each), reporting median wall time of the official bf16 tokenizer, peak memory and the
share of codes an fp32 tokenizer (tower and code search in fp32) gives alike.
Run:  python benchmarks/image_tokenizer.py                       (a mid config on CPU)
      python benchmarks/image_tokenizer.py --config real --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from backbone import machine  # benchmarks/backbone.py, beside this script
from PIL import Image

from llada_cli.inputs.preprocess import PreprocessorConfig, prepare_for_understanding, to_patches
from llada_cli.models.siglip_vq import ImageTokenizerConfig, SigLIPVQ
from llada_cli.runtime.device import peak_memory
from llada_cli.weights import real_configs

MID = {
    "vision_config": {
        **real_configs.IMAGE_TOKENIZER["vision_config"],
        "hidden_size": 384,
        "intermediate_size": 1536,
        "num_heads": 6,
        "depth": 6,
    },
    "vq_config": {**real_configs.IMAGE_TOKENIZER["vq_config"], "latent_channels": 384},
}


def random_encoder(raw: dict, device: str, dtype) -> SigLIPVQ:
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device("meta"):
        model = SigLIPVQ(ImageTokenizerConfig.from_dict(raw))
    torch.set_default_dtype(previous)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if name.endswith(("norm1.weight", "norm2.weight")) else p.normal_(0.0, 0.02)
    return model.eval()


def picture(w: int, h: int) -> Image.Image:
    return Image.effect_noise((w, h), 60).convert("RGB")


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=("mid", "real"), default="mid")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import copy

    where = machine(args.device)
    print(f"torch {torch.__version__}, {where}, bf16 (the official precision), config {args.config}")
    raw = real_configs.IMAGE_TOKENIZER if args.config == "real" else MID
    exact = random_encoder(raw, args.device, torch.float32)
    model = copy.deepcopy(exact).to(torch.bfloat16)
    pre = PreprocessorConfig.from_dict(real_configs.PREPROCESSOR)
    one = [to_patches(prepare_for_understanding(picture(800, 800), 1), pre)]
    two = [to_patches(prepare_for_understanding(picture(640, 480), 2), pre) for _ in range(2)]
    for name, batch in (("one 800x800 image", one), ("two images, several-images budget", two)):
        seconds = timed(lambda b=batch: model.encode(b), args.repeats)
        bf16 = sum(model.encode(batch), [])
        fp32 = sum(exact.encode(batch), [])
        agree = sum(a == b for a, b in zip(bf16, fp32, strict=True)) / len(bf16)
        grids = "+".join(f"{g[0]}x{g[1]}" for _, g in batch)
        print(
            f"{name}: grid {grids} = {len(bf16)} codes in {seconds * 1e3:.1f} ms; "
            f"bf16 and fp32 tokenizers agree on {agree:.1%}"
        )
    memory = peak_memory()
    print(
        f"peak RSS {memory['peak_rss_bytes'] / 2**30:.2f} GiB"
        + (f", peak GPU {memory['peak_gpu_bytes'] / 2**30:.2f} GiB" if "peak_gpu_bytes" in memory else "")
    )


if __name__ == "__main__":
    main()
