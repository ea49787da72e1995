"""LLaDA2.0-Uni backbone (`llada2_moe`): config and the checkpoint's tensor manifest.

The config mirrors the Hub `config.json`; router fields the Uni file omits (expert bias, sigmoid scores,
normalised top-k, fp32 router) get the LLaDA2 defaults that the remote code hard-codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..checkpoint.manifest import Manifest, TensorSpec
from .config_base import config_from_dict

# The checkpoint stores one tensor per expert (HF `llada2_moe`); VeOmni training exports stack them.
EXPERT_LAYOUT_BY_MODEL_TYPE = {"llada2_moe": "per_expert", "llada2_moe_veomni": "stacked"}
DEFAULT_FP8_BLOCK = (128, 128)


@dataclass
class BackboneConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    num_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    image_token_offset: int
    model_type: str = "llada2_moe"
    head_dim: int | None = None
    num_shared_experts: int = 1
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    first_k_dense_replace: int = 0
    hidden_act: str = "silu"
    use_qkv_bias: bool = False
    use_qk_norm: bool = True
    use_bias: bool = False
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 8192
    rope_theta: float = 600000.0
    partial_rotary_factor: float = 0.5
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    moe_router_enable_expert_bias: bool = True
    score_function: str = "sigmoid"
    norm_topk_prob: bool = True
    router_dtype: str = "fp32"
    use_fp8_experts: bool = False
    llada_fp8_experts: dict[str, Any] | None = None
    quantization_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.model_type not in EXPERT_LAYOUT_BY_MODEL_TYPE:
            raise ValueError(f"model_type {self.model_type!r} is not a LLaDA2 backbone")
        if self.num_experts % self.n_group or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_experts must divide into n_group and heads into kv heads")
        if self.image_token_offset >= self.vocab_size:
            raise ValueError("image_token_offset must be below vocab_size")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> BackboneConfig:
        return config_from_dict(cls, raw, source)

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def image_vocab_size(self) -> int:
        return self.vocab_size - self.image_token_offset

    @property
    def expert_layout(self) -> str:
        return EXPERT_LAYOUT_BY_MODEL_TYPE[self.model_type]

    @property
    def fp8_experts(self) -> bool:
        enabled = (self.llada_fp8_experts or {}).get("enabled", False)
        return bool(
            self.use_fp8_experts or enabled or (self.quantization_config or {}).get("quant_method") == "fp8"
        )

    @property
    def fp8_block(self) -> tuple[int, int]:
        for block in (self.llada_fp8_experts, self.quantization_config):
            if block and block.get("weight_block_size"):
                return tuple(block["weight_block_size"])  # type: ignore[return-value]
        return DEFAULT_FP8_BLOCK

    def is_moe_layer(self, i: int) -> bool:
        return i >= self.first_k_dense_replace


def _mlp(prefix: str, hidden: int, width: int, dtype: tuple[str, ...] = ("BF16",)) -> Manifest:
    return {
        f"{prefix}.gate_proj.weight": TensorSpec((width, hidden), dtype),
        f"{prefix}.up_proj.weight": TensorSpec((width, hidden), dtype),
        f"{prefix}.down_proj.weight": TensorSpec((hidden, width), dtype),
    }


def _fp8_expert(prefix: str, hidden: int, width: int, block: tuple[int, int]) -> Manifest:
    """Block-FP8 expert: e4m3 weights plus one fp32 inverse scale per block."""
    out: Manifest = {}
    for name, spec in _mlp(prefix, hidden, width, ("F8_E4M3",)).items():
        rows, cols = spec.shape
        out[name] = spec
        scale_shape = (math.ceil(rows / block[0]), math.ceil(cols / block[1]))
        out[name + "_scale_inv"] = TensorSpec(scale_shape, ("F32",))
    return out


def _experts(cfg: BackboneConfig, prefix: str) -> Manifest:
    d, w, e = cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts
    if cfg.expert_layout == "stacked":
        return {
            f"{prefix}.gate_proj": TensorSpec((e, w, d)),
            f"{prefix}.up_proj": TensorSpec((e, w, d)),
            f"{prefix}.down_proj": TensorSpec((e, d, w)),
        }
    out: Manifest = {}
    for j in range(e):
        if cfg.fp8_experts:
            out.update(_fp8_expert(f"{prefix}.{j}", d, w, cfg.fp8_block))
        else:
            out.update(_mlp(f"{prefix}.{j}", d, w))
    return out


def backbone_manifest(cfg: BackboneConfig) -> Manifest:
    """Every tensor of the backbone checkpoint, in the Hub's names and layout."""
    d, hd = cfg.hidden_size, cfg.head_dim
    qkv_rows = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd
    m: Manifest = {"model.word_embeddings.weight": TensorSpec((cfg.vocab_size, d))}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        m[f"{p}.input_layernorm.weight"] = TensorSpec((d,))
        m[f"{p}.post_attention_layernorm.weight"] = TensorSpec((d,))
        m[f"{p}.attention.query_key_value.weight"] = TensorSpec((qkv_rows, d))
        if cfg.use_qkv_bias:
            m[f"{p}.attention.query_key_value.bias"] = TensorSpec((qkv_rows,))
        if cfg.use_qk_norm:
            m[f"{p}.attention.query_layernorm.weight"] = TensorSpec((hd,))
            m[f"{p}.attention.key_layernorm.weight"] = TensorSpec((hd,))
        m[f"{p}.attention.dense.weight"] = TensorSpec((d, cfg.num_attention_heads * hd))
        if cfg.use_bias:
            m[f"{p}.attention.dense.bias"] = TensorSpec((d,))
        if not cfg.is_moe_layer(i):
            m.update(_mlp(f"{p}.mlp", d, cfg.intermediate_size))
            continue
        m[f"{p}.mlp.gate.weight"] = TensorSpec((cfg.num_experts, d), ("BF16", "F32"))
        if cfg.moe_router_enable_expert_bias:
            m[f"{p}.mlp.gate.expert_bias"] = TensorSpec((cfg.num_experts,), ("F32", "BF16"))
        m.update(_experts(cfg, f"{p}.mlp.experts"))
        if cfg.num_shared_experts:
            m.update(_mlp(f"{p}.mlp.shared_experts", d, cfg.moe_intermediate_size * cfg.num_shared_experts))
    m["model.norm.weight"] = TensorSpec((d,))
    if not cfg.tie_word_embeddings:
        m["lm_head.weight"] = TensorSpec((cfg.vocab_size, d))
    return m
