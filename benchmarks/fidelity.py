"""What each official-numerics switch changes, measured on the tiny checkpoint (random weights, CPU).

1. The last block's tail: one text-to-image prompt at 256x256 (8x8 = 64 codes), greedy, cfg 2: how many
   codes differ between the official rule (`tail="denoise"`) and the earlier one (`tail="hold"`), and the
   forward passes each spends on the last block.
2. The image tokenizer's precision: the share of identical codes between the official bf16 tokenizer and an
   fp32 one (tower and code search) on the two example pictures, understanding resize.
3. Transparency: the share of identical codes between the official "drop" and "white" compositing on the
   transparent example (examples/images/shapes.png).

Run:  python benchmarks/fidelity.py
"""

from __future__ import annotations

from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def tail_rule(root: Path) -> None:
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.inputs.prompts import encode, t2i_prompt
    from llada_cli.inputs.tokenizer import TextTokenizer
    from llada_cli.pipelines.runner import sample_rows
    from llada_cli.sampling import guidance
    from llada_cli.sampling.settings import SamplerSettings

    model = load_backbone(root, "cpu", torch.float32)
    tok = TextTokenizer(root / "tokenizer.json")
    offset, mask = model.cfg.image_token_offset, tok.ids["mask"]
    prompt = "a red fox in the snow"
    rows = [encode(t2i_prompt(prompt, 8, 8, uncond=u), tok, offset) for u in (False, True)]
    p = max(map(len, rows))  # the padded prompt the sampler sees
    last_block = (p + 63) // 32 * 32  # where the block holding the last code starts
    results = {}
    for tail in ("denoise", "hold"):
        block_starts = []
        codes, stats, _ = sample_rows(
            model,
            rows,
            mask,
            SamplerSettings(block_length=32, steps=8, tail=tail),
            gen_length=64,
            generator=torch.Generator().manual_seed(0),
            guidance=guidance.simple(2.0),
            vocab_range=(offset, model.cfg.vocab_size),
            on_step=lambda e, seen=block_starts: seen.append(e.block_start),
        )
        results[tail] = (codes, block_starts.count(last_block), stats.forward_passes)
    (a, steps_a, nfe_a), (b, steps_b, nfe_b) = results["denoise"], results["hold"]
    differ = sum(x != y for x, y in zip(a, b, strict=True))
    print(
        f"1. tail rule: prompt {p} tokens + 64 codes = {p + 64}, last block {(p + 64) // 32 * 32}.."
        f"{(p + 64 + 31) // 32 * 32 - 1} ({-(p + 64) % 32} tail positions)"
    )
    print(
        f"   denoise (official) vs hold: {differ} of 64 codes differ; last block {steps_a} vs {steps_b} "
        f"steps; {nfe_a} vs {nfe_b} forward passes in all"
    )


def codes_for(root: Path, picture: Path, precision: str, alpha: str) -> list[int]:
    from llada_cli.io.images import load_image
    from llada_cli.pipelines.understand import ImageEncoder

    encoder = ImageEncoder(root, "cpu", precision=precision, alpha=alpha)
    return list(encoder.encode([load_image(str(picture))])[0].codes)


def agreement(a: list[int], b: list[int]) -> str:
    same = sum(x == y for x, y in zip(a, b, strict=True))
    return f"{same}/{len(a)} identical ({same / len(a):.1%})"


def main() -> None:
    import logging

    from llada_cli.hub.resolve import parse_model_ref, resolve

    logging.getLogger("llada").setLevel(logging.ERROR)  # the transparency note is part of what is measured
    root = resolve(parse_model_ref("tiny"), ("backbone",))
    print(f"torch {torch.__version__}, CPU, tiny checkpoint (random weights): {root}")
    tail_rule(root)
    for name in ("sunset.png", "shapes.png"):
        bf16 = codes_for(root, EXAMPLES / name, "bf16", "drop")
        fp32 = codes_for(root, EXAMPLES / name, "fp32", "drop")
        print(f"2. {name}: bf16 (official) vs fp32 image tokenizer: {agreement(bf16, fp32)}")
    drop = codes_for(root, EXAMPLES / "shapes.png", "bf16", "drop")
    white = codes_for(root, EXAMPLES / "shapes.png", "bf16", "white")
    print(f"3. shapes.png (transparent): alpha drop (official) vs white: {agreement(drop, white)}")


if __name__ == "__main__":
    main()
