"""The performance suite: one entry point, a table on stdout and the figures as JSON.

For chat, generate and edit on the tiny checkpoint and a mid-size random config, the backbone phase runs in
three modes with the same seed:
  recompute  every step runs the whole canvas so far (what the reference sampler does),
  exact      finished blocks are kept in the exact prefix KV cache (our lossless default),
  sprint     SPRINT: adaptive unmasking and the pruned prefix cache (keep 0.5), the lossy fast path.
Per mode: forwards (NFE), commit forwards, tokens accepted per forward, query / context tokens and LM-head
rows per forward, distinct experts touched per MoE layer, time per forward, the stage's seconds and peak
memory, and how many generated tokens agree with the exact run. Then the seconds and peak memory of every
stage of generate and edit (image encoder, backbone, SigVQ + decoder, VAE) in the exact mode.
Editing with image guidance (three rows) shows SPRINT falling back to the exact path.

Run:  python benchmarks/suite.py [--configs tiny,mid] [--json benchmarks/results/suite-cpu.json]
Random weights never pass the 0.95 threshold, so NFE is the worst case: steps x blocks (spec §6).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch
from backbone import machine  # benchmarks/backbone.py, beside this script
from meter import count_forwards, stage  # benchmarks/meter.py, beside this script

from llada_cli.sampling.sprint import SprintSettings

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "images" / "sunset.png"
CHAT_TEXT = "The quick brown fox jumps over the lazy dog near the river bank. " * 16 + "Summarise this."
MODES = ("recompute", "exact", "sprint")
SPRINT = SprintSettings(keep_ratio=0.5, warmup_steps=1)


@dataclasses.dataclass
class Stack:
    name: str
    model: object
    tokenizer: object
    encoder: object
    decoder: object


def tiny_stack(device: str, dtype) -> Stack:
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.hub.resolve import parse_model_ref, resolve
    from llada_cli.inputs.tokenizer import TextTokenizer
    from llada_cli.pipelines.decode import DecoderStack
    from llada_cli.pipelines.understand import ImageEncoder

    root = resolve(parse_model_ref("tiny"), ("backbone",))
    return Stack(
        "tiny",
        load_backbone(root, device, dtype),
        TextTokenizer(root / "tokenizer.json"),
        ImageEncoder(root, device),
        DecoderStack.load(root, "turbo", device, dtype),
    )


def mid_stack(device: str, dtype) -> Stack:
    """Mid-size random backbone and decoder (benchmarks/text2image.py), the tiny tokenizer and encoder."""
    from text2image import random_stack

    from llada_cli.pipelines.decode import DecoderStack

    tiny = tiny_stack(device, dtype)
    model, sigvq, decoder, vae = random_stack("mid", device, dtype)
    return Stack(
        "mid", model, tiny.tokenizer, tiny.encoder, DecoderStack(sigvq, decoder, vae, "turbo", device, dtype)
    )


def backbone_phase(stack: Stack, task: str, sampler, size: int):
    """Run one task's backbone phase with these sampler settings; returns (generated ids, grid or None)."""
    from dataclasses import replace

    from llada_cli.inputs.prompts import Turn
    from llada_cli.io.images import load_image
    from llada_cli.pipelines.chat import answer
    from llada_cli.pipelines.edit import Editor
    from llada_cli.pipelines.text2image import TextToImage, grid_for
    from llada_cli.settings import ChatSettings, EditSettings, ImageSettings

    if task == "chat":
        settings = ChatSettings(max_tokens=64, seed=0, sampler=replace(sampler, steps=16))
        canvas: dict[int, int] = {}  # the generated ids as written, not re-encoded from the answer text

        def keep(event) -> None:
            canvas.update(enumerate(event.block_tokens, event.block_start))
            canvas["from"] = event.prompt_len

        answer(stack.model, stack.tokenizer, [Turn("user", [CHAT_TEXT])], settings, keep)
        first = canvas.pop("from")
        return [canvas[i] for i in sorted(canvas) if i >= first], None
    gen = TextToImage(stack.model, stack.tokenizer)
    if task == "generate":
        settings = ImageSettings(sampler=replace(sampler, steps=8))
        codes = gen.generate("a red fox in the snow", grid_for(size, size), settings, 0)
        return codes.codes, codes.grid
    cfg_image = 1.5 if task == "edit-3way" else 0.0
    settings = EditSettings(cfg_image=cfg_image, budget=size, sampler=replace(sampler, steps=8))
    editor = Editor(gen, stack.encoder)
    sources = editor.sources([load_image(str(EXAMPLE))], settings)
    codes = editor.edit(sources, "make the sky purple", settings, 0)
    return codes.codes, codes.grid


def measure_modes(stack: Stack, task: str, size: int) -> list[dict]:
    rows, reference = [], None
    from llada_cli.sampling.settings import SamplerSettings

    for mode in ("exact", "recompute", "sprint"):  # exact first: the others are compared with it
        sampler = SamplerSettings(
            prefix_cache="recompute" if mode == "recompute" else "exact",
            sprint=SPRINT if mode == "sprint" else None,
        )
        with stage() as st, count_forwards(stack.model) as log:
            tokens, grid = backbone_phase(stack, task, sampler, size)
        reference = reference if reference is not None else tokens
        agree = sum(a == b for a, b in zip(tokens, reference, strict=False)) / max(len(reference), 1)
        rows.append(
            {
                "config": stack.name,
                "task": task,
                "mode": mode,
                **log.summary(),
                "tokens": len(tokens),
                "tokens_per_forward": round(len(tokens) / max(log.forwards, 1), 3),
                "seconds": round(st.seconds, 3),
                "peak_rss_mb": round(st.peak_rss_bytes / 2**20),
                "peak_cuda_mb": None if st.peak_cuda_bytes is None else round(st.peak_cuda_bytes / 2**20),
                "agreement_with_exact": round(agree, 4),
                "grid": grid,
                "_codes": tokens,
            }
        )
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(rows, key=lambda r: order[r["mode"]])


def measure_stages(stack: Stack, task: str, size: int, codes_row: dict) -> dict:
    """Seconds and peak memory per stage of the exact path (encoder, decoder, VAE after the backbone)."""
    from llada_cli.io.images import load_image
    from llada_cli.pipelines.edit import EditSettings, edit_crop

    out = {"config": stack.name, "task": task, "backbone_s": codes_row["seconds"]}
    if task.startswith("edit"):
        stack.encoder.release()
        with stage() as st:
            stack.encoder.encode(
                [load_image(str(EXAMPLE))], prepare=lambda img: edit_crop(img, size, EditSettings().fit)
            )
        out |= {"encoder_s": round(st.seconds, 3), "encoder_peak_rss_mb": round(st.peak_rss_bytes / 2**20)}
    h, w = codes_row["grid"]
    codes = [c % stack.decoder.code_vocab for c in codes_row["_codes"]]
    with stage() as st:
        _, t = stack.decoder.decode(codes, h, w, seed=0)
    out |= {
        "sigvq_s": round(t.sigvq, 3),
        "decoder_s": round(t.decoder, 3),
        "decoder_evaluations": t.decoder_evaluations,
        "vae_s": round(t.vae, 3),
        "decode_peak_rss_mb": round(st.peak_rss_bytes / 2**20),
    }
    return out


COLUMNS = (
    ("config", "{:<5}"),
    ("task", "{:<9}"),
    ("mode", "{:<9}"),
    ("forwards", "{:>4}"),
    ("commit_forwards", "{:>3}"),
    ("tokens_per_forward", "{:>5.2f}"),
    ("query_tokens_per_forward", "{:>6.1f}"),
    ("context_tokens_per_forward", "{:>7.1f}"),
    ("logit_rows_per_forward", "{:>5.1f}"),
    ("touched_experts_per_layer", "{:>5.1f}"),
    ("ms_per_forward", "{:>7.2f}"),
    ("seconds", "{:>7.2f}"),
    ("peak_rss_mb", "{:>6}"),
    ("agreement_with_exact", "{:>6.1%}"),
)
HEADER = (
    "cfg   task      mode       NFE cmt tok/f  query/f ctx/f   rows/f exp/L  ms/fwd      s    RSS MB agree"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="tiny,mid")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    where = machine(args.device)
    print(
        f"torch {torch.__version__}, {where}, {str(dtype).removeprefix('torch.')}; SPRINT keep 0.5, warm-up 1"
    )
    print(HEADER)
    results = {"machine": {"device": where, "torch": torch.__version__, "python": platform.python_version()}}
    results["backbone"], results["stages"] = [], []
    sizes = {"tiny": 256, "mid": 256}
    for name in args.configs.split(","):
        stack = (tiny_stack if name == "tiny" else mid_stack)(args.device, dtype)
        for task in ("chat", "generate", "edit", "edit-3way"):
            rows = measure_modes(stack, task, sizes[name])
            for r in rows:
                print(" ".join(fmt.format(r[key]) for key, fmt in COLUMNS), flush=True)
            results["backbone"].extend({k: v for k, v in r.items() if k != "_codes"} for r in rows)
            if task != "chat" and task != "edit-3way":
                results["stages"].append(measure_stages(stack, task, sizes[name], rows[1]))
    print("\nstages (exact path): seconds, peak RSS")
    for s in results["stages"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in s.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
