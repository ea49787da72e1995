"""SPRINT's trade: speed-up against the exact cache, and how often its tokens agree with the exact ones.

For the tiny checkpoint and the mid random config, the same prompt and seed are decoded with the exact
prefix cache and with SPRINT (several keep ratios); printed are forward passes, seconds, speed-up and the
agreement rate (share of generated positions holding the same token). Text (one row) and image codes
with guidance (two rows).
Run:  python benchmarks/sprint.py
"""

from __future__ import annotations

import time

import torch
from backbone import MID, random_model  # benchmarks/backbone.py, beside this script

from llada_cli.pipelines.runner import sample_rows
from llada_cli.sampling import guidance
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.sampling.sprint import SprintSettings


def decode(model, rows, gen, steps, sprint, vocab, combine):
    settings = SamplerSettings(block_length=32, steps=steps, threshold=0.95, sprint=sprint)
    start = time.perf_counter()
    with torch.no_grad():
        out, stats, _ = sample_rows(
            model,
            rows,
            0,
            settings,
            gen_length=gen,
            generator=torch.Generator(),
            guidance=combine,
            vocab_range=vocab,
        )
    return out, stats.forward_passes, time.perf_counter() - start


def compare(name: str, model, gen: int, steps: int) -> None:
    g = torch.Generator().manual_seed(0)
    offset = model.cfg.image_token_offset
    prompt = torch.randint(3, offset, (300,), generator=g).tolist()
    uncond = torch.randint(3, offset, (40,), generator=g).tolist()
    cases = (
        ("text", [prompt], (0, offset), None),
        ("image codes, cfg 2", [prompt, uncond], (offset, model.cfg.vocab_size), guidance.simple(2.0)),
    )
    for kind, rows, vocab, combine in cases:
        ref, ref_passes, ref_s = decode(model, rows, gen, steps, None, vocab, combine)
        print(f"{name:>4} {kind:<18} exact        passes {ref_passes:4d}  {ref_s:7.2f} s")
        for keep in (1.0, 0.5, 0.25):
            out, passes, secs = decode(
                model, rows, gen, steps, SprintSettings(keep_ratio=keep), vocab, combine
            )
            agree = sum(a == b for a, b in zip(out, ref, strict=False)) / max(len(ref), 1)
            print(
                f"{name:>4} {kind:<18} sprint {keep:4.2f}  passes {passes:4d}  {secs:7.2f} s  "
                f"speed-up {ref_s / secs:4.2f}x  agreement {agree:6.1%}"
            )


def main() -> None:
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.hub.resolve import parse_model_ref, resolve

    torch.set_grad_enabled(False)
    print(
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, fp32; prompt 300 tokens, steps 8"
    )
    tiny = load_backbone(resolve(parse_model_ref("tiny"), ("backbone",)), "cpu", torch.float32)
    compare("tiny", tiny, 128, 8)
    compare("mid", random_model(MID), 64, 8)


if __name__ == "__main__":
    main()
