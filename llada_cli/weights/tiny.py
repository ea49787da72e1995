"""Build the tiny random-weight checkpoint in exactly the real repo's layout.

Same folders and file names, same config keys, same tensor names and dtypes, same special-token strings as
`inclusionAI/LLaDA2.0-Uni` (and, for the `fp8` variant, the FP8 repo's expert format); only the sizes are
small. The tensors come from the same manifests the strict loader checks, so the two cannot drift. The build
is deterministic from a seed, takes a few seconds and writes a few MB.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..models.llada2_moe import BackboneConfig, backbone_manifest
from ..models.siglip_vq import ImageTokenizerConfig, image_tokenizer_manifest
from ..models.sigvq import SigVQConfig, sigvq_manifest
from ..models.tensors import TensorSpecs
from ..models.vae import vae_manifest
from ..models.zimage import DecoderConfig, decoder_manifest
from . import real_configs
from .tokenizer import build_tokenizer, tokenizer_config

BUILDER_VERSION = 1
VARIANTS = ("bf16", "fp8")
BACKBONE_SHARDS = 3
FP8_BLOCK = 16  # the real 128x128 blocks would be one block per tiny expert
TINY_BPE_VOCAB = 400
TINY_IMAGE_OFFSET = 768
TINY_IMAGE_VOCAB = 256

# A mid-size backbone (1024 wide, 64 experts top-8, 4 layers) for benchmarks and the tests that need
# expert routing at a realistic width; the real config's other keys apply.
MID_BACKBONE = {
    "vocab_size": 8192,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "moe_intermediate_size": 512,
    "image_token_offset": 4096,
    "first_k_dense_replace": 1,
    "routed_scaling_factor": 2.5,
}

TINY_BACKBONE = {
    "vocab_size": TINY_IMAGE_OFFSET + TINY_IMAGE_VOCAB,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 64,
    "num_experts_per_tok": 4,
    "n_group": 8,
    "topk_group": 4,
    "moe_intermediate_size": 32,
    "image_token_offset": TINY_IMAGE_OFFSET,
}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "depth": 2, "image_size": 512}
TINY_VQ = {"num_embeddings": TINY_IMAGE_VOCAB, "embed_dim": 16, "latent_channels": 32}
TINY_SIGVQ_DIM = 32
TINY_DECODER = {
    "dim": 64,
    "n_heads": 2,
    "n_kv_heads": 2,
    "n_layers": 2,
    "n_refiner_layers": 1,
    "axes_dims": [8, 12, 12],
    "cap_feat_dim": TINY_SIGVQ_DIM,
}
TINY_VAE = {
    "block_out_channels": [8, 16, 16, 16],
    "norm_num_groups": 4,
    "layers_per_block": 1,
    "sample_size": 256,
}


def tiny_configs(tokenizer) -> dict[str, dict]:
    """All config files of the tiny checkpoint: the real ones with the sizes shrunk."""
    eos = tokenizer.token_to_id("<|endoftext|>")
    backbone = {**real_configs.BACKBONE, **TINY_BACKBONE, "pad_token_id": eos}
    image_tok = copy.deepcopy(real_configs.IMAGE_TOKENIZER)
    image_tok["vision_config"].update(TINY_VISION)
    image_tok["vq_config"].update(TINY_VQ)
    decoder = {**real_configs.DECODER_TURBO, **TINY_DECODER}
    generation = {**real_configs.GENERATION, "eos_token_id": eos, "pad_token_id": eos}
    return {
        "config.json": backbone,
        "generation_config.json": generation,
        "tokenizer_config.json": tokenizer_config(),
        "image_tokenizer/config.json": image_tok,
        "image_tokenizer/preprocessor_config.json": dict(real_configs.PREPROCESSOR),
        "decoder/config.json": decoder,
        "decoder-turbo/config.json": dict(decoder),
        "vae/config.json": {**real_configs.VAE, **TINY_VAE},
    }


def _random_state(manifest: TensorSpecs, gen, std: float = 0.02) -> dict:
    """Deterministic random tensors: norms near one, everything else small and centred."""
    import torch

    dtypes = {"BF16": torch.bfloat16, "F32": torch.float32}
    out = {}
    for name, spec in manifest.items():
        t = torch.randn(spec.shape, generator=gen) * std
        if (
            name.endswith(("norm.weight", "layernorm.weight", "norm1.weight", "norm2.weight"))
            or ".norm_" in name
        ):
            t = 1.0 + t
        out[name] = t.to(dtypes.get(spec.dtype, torch.bfloat16))
    return out


def _to_fp8_experts(state: dict, block: int) -> dict:
    from ..runtime.quant import quantize_fp8_blocks

    out = {}
    for name, t in state.items():
        if ".mlp.experts." in name and name.endswith("_proj.weight"):
            out[name], out[name + "_scale_inv"] = quantize_fp8_blocks(t, (block, block))
        else:
            out[name] = t
    return out


def _save_sharded(state: dict, root: Path, shards: int) -> None:
    from safetensors.torch import save_file

    names = list(state)
    total = sum(t.numel() * t.element_size() for t in state.values())
    per_shard, groups, current, size = total / shards, [], [], 0
    for name in names:
        current.append(name)
        size += state[name].numel() * state[name].element_size()
        if size >= per_shard * (len(groups) + 1) and len(groups) < shards - 1:
            groups.append(current)
            current = []
    groups.append(current)
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: state[k].contiguous() for k in group}, str(root / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def build_tiny(dest: Path, variant: str = "bf16", seed: int = 0) -> Path:
    """Write the tiny checkpoint into `dest` (which must not exist); returns `dest`."""
    import torch
    from safetensors.torch import save_file

    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny variant {variant!r}; choose from {', '.join(VARIANTS)}")
    dest = Path(dest)
    dest.mkdir(parents=True)
    for sub in ("image_tokenizer", "decoder", "decoder-turbo", "vae"):
        (dest / sub).mkdir()
    tok = build_tokenizer(TINY_BPE_VOCAB, TINY_IMAGE_OFFSET, TINY_IMAGE_VOCAB)
    tok.save(str(dest / "tokenizer.json"))
    configs = tiny_configs(tok)
    if variant == "fp8":
        configs["config.json"].update(real_configs.FP8_FLAGS)
        configs["config.json"]["llada_fp8_experts"] = {
            "enabled": True,
            "format": "e4m3fn",
            "weight_granularity": "per_expert_2d_block",
            "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
        }
    for rel, data in configs.items():
        (dest / rel).write_text(json.dumps(data, indent=2) + "\n")

    gen = torch.Generator().manual_seed(seed)
    bf16_cfg = BackboneConfig.from_dict(
        {**configs["config.json"], "use_fp8_experts": False, "llada_fp8_experts": None}
    )
    backbone = _random_state(backbone_manifest(bf16_cfg), gen)
    if variant == "fp8":
        backbone = _to_fp8_experts(backbone, FP8_BLOCK)
    _save_sharded(backbone, dest, BACKBONE_SHARDS)

    it_cfg = ImageTokenizerConfig.from_dict(configs["image_tokenizer/config.json"])
    save_file(
        _random_state(image_tokenizer_manifest(it_cfg), gen),
        str(dest / "image_tokenizer/model.safetensors"),
        metadata={"format": "pt"},
    )
    torch.save(
        _random_state(sigvq_manifest(SigVQConfig(TINY_IMAGE_VOCAB, TINY_SIGVQ_DIM)), gen),
        dest / "image_tokenizer/sigvq_embedding.pt",
    )
    for folder in ("decoder", "decoder-turbo"):
        cfg = DecoderConfig.from_dict(configs[f"{folder}/config.json"])
        save_file(
            _random_state(decoder_manifest(cfg), gen),
            str(dest / folder / "model.safetensors"),
            metadata={"format": "pt"},
        )
    save_file(
        _random_state(vae_manifest(configs["vae/config.json"]), gen, std=0.05),
        str(dest / "vae/diffusion_pytorch_model.safetensors"),
        metadata={"format": "pt"},
    )
    (dest / ".llada-tiny.json").write_text(
        json.dumps({"version": BUILDER_VERSION, "variant": variant, "seed": seed}) + "\n"
    )
    return dest


def ensure_tiny(root: Path, variant: str = "bf16", seed: int = 0) -> Path:
    """Build once into `root`, reuse afterwards; a half-built folder is never visible (build, then rename),
    and the staging folders of builds that were killed are removed by the next one."""
    from ..errors import ModelUnavailable

    final = Path(root) / f"{variant}-seed{seed}-v{BUILDER_VERSION}"
    if (final / ".llada-tiny.json").is_file():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_builds(final.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".building-{os.getpid()}-", dir=final.parent))
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot build the tiny checkpoint in {final.parent}: {exc.strerror or exc}",
            "set LLADA_HOME to a folder you can write",
        ) from None
    try:
        build_tiny(staging / "ckpt", variant, seed)
        try:
            os.replace(staging / "ckpt", final)
        except OSError:
            if not (final / ".llada-tiny.json").is_file():  # lost a race only if the winner finished
                raise
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot build the tiny checkpoint in {final.parent}: {exc.strerror or exc}",
            "set LLADA_HOME to a folder with room you can write",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _remove_abandoned_builds(folder: Path) -> None:
    """`.building-PID-*` folders whose process is gone were left by a killed build."""
    for staging in folder.glob(".building-*"):
        pid = staging.name.split("-")[1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
