"""The real checkpoints llada knows, what each folder holds, and their sizes (from the shared facts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownCheckpoint:
    repo_id: str
    description: str
    approx_bytes: int
    folders: dict[str, str]


_FOLDERS = {
    "": "backbone config, tokenizer, model-000NN-of-000MM.safetensors shards and their index",
    "image_tokenizer/": "SigLIP-VQ encoder (config, preprocessor config, safetensors) and sigvq_embedding.pt",
    "decoder/": "Z-Image decoder transformer, 50 steps (about 12.3 GB)",
    "decoder-turbo/": "distilled Z-Image decoder, 8 steps (about 12.3 GB)",
    "vae/": "FLUX.1 AutoencoderKL (about 168 MB)",
}

KNOWN_CHECKPOINTS = {
    c.repo_id: c
    for c in (
        KnownCheckpoint(
            "inclusionAI/LLaDA2.0-Uni",
            "bf16: 16.3 B MoE backbone (13 shards, 32.6 GB) plus image tokenizer, two decoders and VAE",
            60_280_000_000,
            _FOLDERS,
        ),
        KnownCheckpoint(
            "inclusionAI/LLaDA2.0-Uni-FP8",
            "routed experts in block FP8 (e4m3, 128x128 weight_scale_inv); everything else bf16",
            32_670_000_000,
            _FOLDERS,
        ),
    )
}
DEFAULT_MODEL = "inclusionAI/LLaDA2.0-Uni"
