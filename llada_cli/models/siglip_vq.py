"""SigLIP-VQ image tokenizer (`image_tokenizer/`): config and the checkpoint's tensor manifest.

The Hub file nests a `vision_config` and a `vq_config` block (GLM-Image style); defaults are the ones the
official loader applies when a key is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .config_base import config_from_dict
from .tensors import TensorSpec, TensorSpecs

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


def image_tokenizer_manifest(cfg: ImageTokenizerConfig) -> TensorSpecs:
    v, q = cfg.vision, cfg.vq
    d, f, p = v.hidden_size, v.intermediate_size, v.patch_size
    m: TensorSpecs = {
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


# ----------------------------------------------------------------------------------------------------------
# Modules. Shapes: S patches of all images together, D hidden, H heads, K codebook size, E code width.
# ----------------------------------------------------------------------------------------------------------

import torch  # noqa: E402  (the config half above stays importable without torch)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ACTIVATIONS = {"gelu": lambda x: F.gelu(x), "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}

# The image tokenizer's arithmetic, on every device. "bf16" is the official one: every official script
# builds `ImageTokenizer(dtype=torch.bfloat16)`, so the vision tower, quant_conv and the code search all run
# in bf16. "fp32" runs them in fp32: exact arithmetic, but not what the model was trained on (codes land
# near ties often, and other codes are other tokens).
PRECISIONS = {"bf16": torch.bfloat16, "fp32": torch.float32}
DEFAULT_PRECISION = "bf16"


def resample_positions(table: torch.Tensor, grid: int, gh: int, gw: int) -> torch.Tensor:
    """The learned grid x grid position table sampled at the centres of a gh x gw patch grid (bilinear,
    half-pixel centres, edge clamp), as the official `grid_sample` does -> [gh * gw, D]."""
    d = table.shape[1]
    square = table.float().T.reshape(1, d, grid, grid)
    ys = ((torch.arange(gh, dtype=torch.float32) + 0.5) / gh) * 2 - 1
    xs = ((torch.arange(gw, dtype=torch.float32) + 0.5) / gw) * 2 - 1
    coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].to(table.device)  # [1,gh,gw,2]
    out = F.grid_sample(square, coords, mode="bilinear", align_corners=False, padding_mode="border")
    return out[0].reshape(d, gh * gw).T.to(table.dtype)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=cfg.attention_bias)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        s, d = x.shape
        q, k, v = self.qkv(x).view(s, 3, self.heads, d // self.heads).permute(1, 2, 0, 3)  # 3 x [H, S, hd]
        out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)
        return self.proj(out[0].transpose(0, 1).reshape(s, d))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {cfg.hidden_act!r} is not supported")
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = VisionAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class VisionEncoder(nn.Module):
    """Patch embedding + resampled absolute positions + pre-LN blocks; no CLS token, no final norm."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size)
        self.embeddings = nn.Module()
        self.embeddings.position_embedding = nn.Embedding(cfg.position_grid**2, cfg.hidden_size)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))

    def forward(self, rows: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        """rows [S, 3*p*p] of all images, grids [(gh, gw)] per image -> hidden [S, D]."""
        proj = self.patch_embed.proj
        x = F.linear(rows.to(proj.weight.dtype), proj.weight.flatten(1), proj.bias)
        table = self.embeddings.position_embedding.weight
        x = x + torch.cat([resample_positions(table, self.cfg.position_grid, gh, gw) for gh, gw in grids])
        mask = None
        if len(grids) > 1:  # each image attends only to itself
            image = torch.repeat_interleave(
                torch.arange(len(grids), device=x.device),
                torch.tensor([gh * gw for gh, gw in grids], device=x.device),
            )
            mask = image[:, None] == image[None, :]
        for block in self.blocks:
            x = block(x, mask)
        return x


def nearest_codes(
    z: torch.Tensor, codebook: torch.Tensor, precision: str = DEFAULT_PRECISION
) -> torch.Tensor:
    """Cosine nearest code: argmin of |z|^2 + |e|^2 - 2 z.e over unit vectors, first index on ties.

    "bf16" repeats the official arithmetic op for op (bf16 normalise, bf16 matmul, bf16 sums), which
    decides near-ties the way the model was trained to read; "fp32" is the exact-arithmetic choice."""
    dtype = PRECISIONS[precision]
    z = F.normalize(z.to(dtype), dim=-1)
    e = F.normalize(codebook.to(dtype), dim=-1)
    dist = torch.sum(z**2, dim=1, keepdim=True) + torch.sum(e**2, dim=1) - 2 * (z @ e.T)
    return dist.argmin(dim=-1)


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(cfg.num_embeddings, cfg.embed_dim)
        self.quant_conv = nn.Conv2d(cfg.latent_channels, cfg.embed_dim, 1)

    def forward(self, hidden: torch.Tensor, precision: str = DEFAULT_PRECISION) -> torch.Tensor:
        """hidden [S, latent] -> codes [S]; the 1x1 quant_conv is a per-patch linear map."""
        w = self.quant_conv.weight
        z = F.linear(hidden.to(w.dtype), w.flatten(1), self.quant_conv.bias)
        return nearest_codes(z, self.quantize.embedding.weight, precision)


class SigLIPVQ(nn.Module):
    """The image tokenizer: pixels -> one discrete code per 16x16 patch, raster order."""

    def __init__(self, cfg: ImageTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.model = nn.Module()
        self.model.visual = VisionEncoder(cfg.vision)
        self.model.vqmodel = VectorQuantizer(cfg.vq)

    @property
    def precision(self) -> str:
        """Which of PRECISIONS the weights were loaded in; the code search uses the same arithmetic."""
        dtype = self.model.vqmodel.quant_conv.weight.dtype
        return next((name for name, d in PRECISIONS.items() if d == dtype), "fp32")

    @torch.no_grad()
    def encode(self, images: list[tuple[torch.Tensor, tuple[int, int]]]) -> list[list[int]]:
        """[(rows [N, 3*p*p], (gh, gw))] -> codes per image (raw codebook ids, row-major), computed in
        the precision the tokenizer was loaded in (the tower and the code search alike)."""
        device = self.model.vqmodel.quant_conv.weight.device
        rows = torch.cat([r for r, _ in images]).to(device)
        grids = [g for _, g in images]
        codes = self.model.vqmodel(self.model.visual(rows, grids), self.precision).tolist()
        out, start = [], 0
        for gh, gw in grids:
            out.append(codes[start : start + gh * gw])
            start += gh * gw
        return out
