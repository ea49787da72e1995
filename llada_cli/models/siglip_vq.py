"""SigLIP-VQ image tokenizer (`image_tokenizer/`): config and the checkpoint's tensor manifest.

The Hub file nests a `vision_config` and a `vq_config` block (GLM-Image style); defaults are the ones the
official loader applies when a key is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..checkpoint.manifest import Manifest, TensorSpec
from ..errors import ConfigError
from .config_base import config_from_dict

# `post_quant_conv` is in the checkpoint but only the decoder half of a VQ-VAE uses it; we never do.
UNUSED_PREFIXES = ("model.vqmodel.post_quant_conv.",)


@dataclass
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_heads: int
    depth: int
    patch_size: int
    image_size: int
    in_channels: int = 3
    hidden_act: str = "gelu"
    attention_bias: bool = True
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    spatial_merge_size: int = 1

    @property
    def position_grid(self) -> int:
        """Side of the learned position table (128 for 2048 px / 16 px patches)."""
        return self.image_size // self.patch_size


@dataclass
class VQConfig:
    num_embeddings: int
    embed_dim: int
    latent_channels: int
    beta: float = 0.25


@dataclass
class ImageTokenizerConfig:
    vision: VisionConfig
    vq: VQConfig

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str = "image_tokenizer/config.json"
    ) -> ImageTokenizerConfig:
        vision_raw, vq_raw = raw.get("vision_config", raw), raw.get("vq_config", raw)
        if not isinstance(vision_raw, dict) or not isinstance(vq_raw, dict):
            raise ConfigError(f"{source}: vision_config and vq_config must be objects")
        return cls(
            vision=config_from_dict(VisionConfig, vision_raw, f"{source} (vision_config)"),
            vq=config_from_dict(VQConfig, vq_raw, f"{source} (vq_config)"),
        )


def image_tokenizer_manifest(cfg: ImageTokenizerConfig) -> Manifest:
    v, q = cfg.vision, cfg.vq
    d, f, p = v.hidden_size, v.intermediate_size, v.patch_size
    m: Manifest = {
        "model.visual.patch_embed.proj.weight": TensorSpec((d, v.in_channels, p, p)),
        "model.visual.patch_embed.proj.bias": TensorSpec((d,)),
        "model.visual.embeddings.position_embedding.weight": TensorSpec((v.position_grid**2, d)),
    }
    for i in range(v.depth):
        b = f"model.visual.blocks.{i}"
        for norm in ("norm1", "norm2"):
            m[f"{b}.{norm}.weight"] = TensorSpec((d,))
            m[f"{b}.{norm}.bias"] = TensorSpec((d,))
        m[f"{b}.attn.qkv.weight"] = TensorSpec((3 * d, d))
        if v.attention_bias:
            m[f"{b}.attn.qkv.bias"] = TensorSpec((3 * d,))
        m[f"{b}.attn.proj.weight"] = TensorSpec((d, d))
        m[f"{b}.attn.proj.bias"] = TensorSpec((d,))
        m[f"{b}.mlp.fc1.weight"] = TensorSpec((f, d))
        m[f"{b}.mlp.fc1.bias"] = TensorSpec((f,))
        m[f"{b}.mlp.fc2.weight"] = TensorSpec((d, f))
        m[f"{b}.mlp.fc2.bias"] = TensorSpec((d,))
    m["model.vqmodel.quantize.embedding.weight"] = TensorSpec((q.num_embeddings, q.embed_dim))
    m["model.vqmodel.quant_conv.weight"] = TensorSpec((q.embed_dim, q.latent_channels, 1, 1))
    m["model.vqmodel.quant_conv.bias"] = TensorSpec((q.embed_dim,))
    m["model.vqmodel.post_quant_conv.weight"] = TensorSpec((q.latent_channels, q.embed_dim, 1, 1))
    m["model.vqmodel.post_quant_conv.bias"] = TensorSpec((q.latent_channels,))
    return m
