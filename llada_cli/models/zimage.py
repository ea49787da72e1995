"""Z-Image diffusion decoder (`decoder/`, `decoder-turbo/`): config and the checkpoint's tensor manifest.

The module itself is diffusers' `ZImageTransformer2DModel`; the checkpoint names its caption embedder
`semantic_embedder.*` where diffusers says `cap_embedder.*`, renamed at the load boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .config_base import config_from_dict
from .tensors import TensorSpec, TensorSpecs

ADALN_EMBED_DIM = 256  # diffusers caps the timestep embedding width at 256
TIMESTEP_FREQ_DIM = 256
TIMESTEP_MID_DIM = 1024
# The official decoder loader forces these position-table lengths whatever the config says.
DECODER_AXES_LENS = (32768, 1024, 1024)
CHECKPOINT_TO_DIFFUSERS = {"semantic_embedder.": "cap_embedder."}
WEIGHT_FILE_NAMES = ("model.safetensors", "decoder_model.safetensors")


@dataclass
class DecoderConfig:
    dim: int
    n_layers: int
    n_heads: int
    in_channels: int = 16
    n_refiner_layers: int = 2
    n_kv_heads: int | None = None
    all_patch_size: list[int] = field(default_factory=lambda: [2])
    all_f_patch_size: list[int] = field(default_factory=lambda: [1])
    norm_eps: float = 1e-5
    qk_norm: bool = True
    cap_feat_dim: int = 4096
    rope_theta: float = 256.0
    t_scale: float = 1000.0
    axes_dims: list[int] = field(default_factory=lambda: [32, 48, 48])
    axes_lens: list[int] = field(default_factory=lambda: list(DECODER_AXES_LENS))

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if sum(self.axes_dims) != self.head_dim:
            raise ValueError("axes_dims must add up to dim // n_heads")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "decoder/config.json") -> DecoderConfig:
        return config_from_dict(cls, raw, source)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        return int(self.dim / 3 * 8)

    def diffusers_kwargs(self, cap_feat_dim: int) -> dict[str, Any]:
        """Arguments for diffusers' class, with the official overrides (cap width from SigVQ, axes_lens)."""
        return {
            "all_patch_size": tuple(self.all_patch_size),
            "all_f_patch_size": tuple(self.all_f_patch_size),
            "in_channels": self.in_channels,
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_refiner_layers": self.n_refiner_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "norm_eps": self.norm_eps,
            "qk_norm": self.qk_norm,
            "cap_feat_dim": cap_feat_dim,
            "rope_theta": self.rope_theta,
            "t_scale": self.t_scale,
            "axes_dims": list(self.axes_dims),
            "axes_lens": list(DECODER_AXES_LENS),
        }


def _block(prefix: str, cfg: DecoderConfig, modulated: bool) -> TensorSpecs:
    d, hd = cfg.dim, cfg.head_dim
    m: TensorSpecs = {
        f"{prefix}.attention.to_q.weight": TensorSpec((cfg.n_heads * hd, d)),
        f"{prefix}.attention.to_k.weight": TensorSpec((cfg.n_kv_heads * hd, d)),
        f"{prefix}.attention.to_v.weight": TensorSpec((cfg.n_kv_heads * hd, d)),
        f"{prefix}.attention.to_out.0.weight": TensorSpec((d, cfg.n_heads * hd)),
        f"{prefix}.feed_forward.w1.weight": TensorSpec((cfg.ffn_dim, d)),
        f"{prefix}.feed_forward.w2.weight": TensorSpec((d, cfg.ffn_dim)),
        f"{prefix}.feed_forward.w3.weight": TensorSpec((cfg.ffn_dim, d)),
    }
    if cfg.qk_norm:
        m[f"{prefix}.attention.norm_q.weight"] = TensorSpec((hd,))
        m[f"{prefix}.attention.norm_k.weight"] = TensorSpec((hd,))
    for norm in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
        m[f"{prefix}.{norm}.weight"] = TensorSpec((d,))
    if modulated:
        adaln = min(d, ADALN_EMBED_DIM)
        m[f"{prefix}.adaLN_modulation.0.weight"] = TensorSpec((4 * d, adaln))
        m[f"{prefix}.adaLN_modulation.0.bias"] = TensorSpec((4 * d,))
    return m


def decoder_manifest(cfg: DecoderConfig) -> TensorSpecs:
    """Every tensor of a decoder checkpoint, in the official (checkpoint) names."""
    d, adaln, c = cfg.dim, min(cfg.dim, ADALN_EMBED_DIM), cfg.in_channels
    m: TensorSpecs = {"x_pad_token": TensorSpec((1, d)), "cap_pad_token": TensorSpec((1, d))}
    for p, f in zip(cfg.all_patch_size, cfg.all_f_patch_size, strict=True):
        key, patch_feats = f"{p}-{f}", f * p * p * c
        m[f"all_x_embedder.{key}.weight"] = TensorSpec((d, patch_feats))
        m[f"all_x_embedder.{key}.bias"] = TensorSpec((d,))
        m[f"all_final_layer.{key}.linear.weight"] = TensorSpec((patch_feats, d))
        m[f"all_final_layer.{key}.linear.bias"] = TensorSpec((patch_feats,))
        m[f"all_final_layer.{key}.adaLN_modulation.1.weight"] = TensorSpec((d, adaln))
        m[f"all_final_layer.{key}.adaLN_modulation.1.bias"] = TensorSpec((d,))
    m["t_embedder.mlp.0.weight"] = TensorSpec((TIMESTEP_MID_DIM, TIMESTEP_FREQ_DIM))
    m["t_embedder.mlp.0.bias"] = TensorSpec((TIMESTEP_MID_DIM,))
    m["t_embedder.mlp.2.weight"] = TensorSpec((adaln, TIMESTEP_MID_DIM))
    m["t_embedder.mlp.2.bias"] = TensorSpec((adaln,))
    m["semantic_embedder.0.weight"] = TensorSpec((cfg.cap_feat_dim,))
    m["semantic_embedder.1.weight"] = TensorSpec((d, cfg.cap_feat_dim))
    m["semantic_embedder.1.bias"] = TensorSpec((d,))
    for i in range(cfg.n_layers):
        m.update(_block(f"layers.{i}", cfg, modulated=True))
    for i in range(cfg.n_refiner_layers):
        m.update(_block(f"noise_refiner.{i}", cfg, modulated=True))
        m.update(_block(f"context_refiner.{i}", cfg, modulated=False))
    return m


def to_diffusers_name(name: str) -> str:
    for old, new in CHECKPOINT_TO_DIFFUSERS.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


_BLOCK_WEIGHT = re.compile(r"(?:^|\.)(?:layers|noise_refiner|context_refiner)\.\d+\.(?:.+\.)?weight$")


def quant_predicate(name: str, shape: tuple[int, ...]) -> bool:
    """Which decoder tensors `--decoder-quant` packs: the 2-D weights of the transformer blocks;
    embedders, the final layers and norms keep bf16."""
    return len(shape) == 2 and _BLOCK_WEIGHT.search(name) is not None
