"""LLaDA2.0-Uni backbone (`llada2_moe`): config and the checkpoint's tensor manifest.

The config mirrors the Hub `config.json`; router fields the Uni file omits (expert bias, sigmoid scores,
normalised top-k, fp32 router) get the LLaDA2 defaults that the remote code hard-codes.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from .config_base import config_from_dict
from .tensors import TensorSpec, TensorSpecs

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
    # Not a config key: how the FP8 files name their block scales, read from the headers at load time.
    fp8_scale_suffix: str = "_scale_inv"

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


def _mlp(prefix: str, hidden: int, width: int, dtype: tuple[str, ...] = ("BF16",)) -> TensorSpecs:
    return {
        f"{prefix}.gate_proj.weight": TensorSpec((width, hidden), dtype),
        f"{prefix}.up_proj.weight": TensorSpec((width, hidden), dtype),
        f"{prefix}.down_proj.weight": TensorSpec((hidden, width), dtype),
    }


def _with_fp8_scales(weights: TensorSpecs, cfg: BackboneConfig) -> TensorSpecs:
    """Block-FP8 experts: e4m3 weights plus one fp32 scale per block (multiplied in, whatever the name)."""
    out: TensorSpecs = {}
    b0, b1 = cfg.fp8_block
    for name, spec in weights.items():
        *lead, rows, cols = spec.shape
        out[name] = TensorSpec(spec.shape, ("F8_E4M3",))
        scale = (*lead, math.ceil(rows / b0), math.ceil(cols / b1))
        out[name + cfg.fp8_scale_suffix] = TensorSpec(scale, ("F32",))
    return out


def _experts(cfg: BackboneConfig, prefix: str) -> TensorSpecs:
    d, w, e = cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts
    if cfg.expert_layout == "stacked":
        out = {
            f"{prefix}.gate_proj": TensorSpec((e, w, d)),
            f"{prefix}.up_proj": TensorSpec((e, w, d)),
            f"{prefix}.down_proj": TensorSpec((e, d, w)),
        }
    else:
        out = {k: v for j in range(e) for k, v in _mlp(f"{prefix}.{j}", d, w).items()}
    return _with_fp8_scales(out, cfg) if cfg.fp8_experts else out


def backbone_manifest(cfg: BackboneConfig) -> TensorSpecs:
    """Every tensor of the backbone checkpoint, in the Hub's names and layout."""
    d, hd = cfg.hidden_size, cfg.head_dim
    qkv_rows = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd
    m: TensorSpecs = {"model.word_embeddings.weight": TensorSpec((cfg.vocab_size, d))}
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


# ----------------------------------------------------------------------------------------------------------
# Modules. Shapes: B batch (CFG rows), T new tokens, S cached + new keys, D hidden, H/K query/kv heads,
# Dh head dim, E experts, N = B*T flattened tokens, k experts per token.
# ----------------------------------------------------------------------------------------------------------

import torch  # noqa: E402  (the config half above stays importable without torch)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from . import moe_dispatch  # noqa: E402


class RMSNorm(nn.Module):
    """Normalise in fp32, cast back, then scale by the weight: the order the reference uses."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)
        return normed * self.weight


def rope_cos_sin(positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin [B, 1, T, rotary_dim] for NeoX-style (rotate-half) rotary embedding, computed in fp32."""
    inv_freq = theta ** (
        -torch.arange(0, rotary_dim, 2, device=positions.device, dtype=torch.float32) / rotary_dim
    )
    freqs = positions.float()[..., None] * inv_freq  # [B, T, rot/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `rotary_dim` dims of each head [B, H, T, Dh]; the rest pass through untouched."""
    rot = cos.shape[-1]
    a, rest = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat((-a[..., half:], a[..., :half]), dim=-1)
    return torch.cat((a * cos + rotated * sin, rest), dim=-1)


class KVCache:
    """Exact prefix cache: keys/values of finished blocks, allocated once for the whole canvas.

    Finished blocks never change and, under the block-causal mask, never see later tokens, so their
    keys and values are final: a step only computes the current block against this prefix.
    """

    def __init__(self, cfg: BackboneConfig, batch: int, max_len: int, device, dtype, layer_devices=None):
        shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        devices = layer_devices or [device] * cfg.num_hidden_layers  # layers split over GPUs keep theirs
        self.k = [torch.zeros(shape, device=d, dtype=dtype) for d in devices]
        self.v = [torch.zeros(shape, device=d, dtype=dtype) for d in devices]
        self.length = 0
        # SPRINT (lossy): a subset of prefix positions to attend to, and attention mass gathered to pick it
        self.view: torch.Tensor | None = None
        self.scoring = False
        self.attn_mass = torch.zeros(max_len, device=device, dtype=torch.float32)

    def keys(self, layer: int, new_k: torch.Tensor, new_v: torch.Tensor, commit: bool):
        """Prefix plus the new keys [B, K, S, Dh]; with commit the new ones are appended for good."""
        n = new_k.shape[2]
        k, v = self.k[layer], self.v[layer]
        if commit:
            k[:, :, self.length : self.length + n] = new_k
            v[:, :, self.length : self.length + n] = new_v
            return k[:, :, : self.length + n], v[:, :, : self.length + n]
        prefix_k, prefix_v = k[:, :, : self.length], v[:, :, : self.length]
        if self.view is not None:  # keys keep the RoPE of their original positions
            view = self.view.to(k.device)
            prefix_k, prefix_v = prefix_k[:, :, view], prefix_v[:, :, view]
        return torch.cat((prefix_k, new_k), dim=2), torch.cat((prefix_v, new_v), dim=2)

    def add_attention_mass(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Attention the current block's queries [B, H, T, Dh] give each prefix key, summed over rows,
        heads and queries (and, across calls, layers)."""
        heads = q.shape[1] // k.shape[1]
        scores = (q.float() @ k.float().repeat_interleave(heads, dim=1).transpose(-1, -2)) / q.shape[
            -1
        ] ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-1).nan_to_num(0.0)
        self.attn_mass[: self.length] += (
            weights[..., : self.length].sum(dim=(0, 1, 2)).to(self.attn_mass.device)
        )


class Attention(nn.Module):
    def __init__(self, cfg: BackboneConfig, layer: int):
        super().__init__()
        self.layer, self.h, self.kv, self.hd = (
            layer,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        self.query_key_value = nn.Linear(
            cfg.hidden_size, (self.h + 2 * self.kv) * self.hd, bias=cfg.use_qkv_bias
        )
        self.query_layernorm = RMSNorm(self.hd, cfg.rms_norm_eps)
        self.key_layernorm = RMSNorm(self.hd, cfg.rms_norm_eps)
        self.dense = nn.Linear(self.h * self.hd, cfg.hidden_size, bias=cfg.use_bias)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, commit: bool) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.query_key_value(x).view(b, t, self.h + 2 * self.kv, self.hd)
        q, k, v = qkv.split((self.h, self.kv, self.kv), dim=2)
        q = apply_partial_rope(self.query_layernorm(q).transpose(1, 2), cos, sin)  # [B, H, T, Dh]
        k = apply_partial_rope(self.key_layernorm(k).transpose(1, 2), cos, sin)  # [B, K, T, Dh]
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.keys(self.layer, k, v, commit)
            if cache.scoring and not commit:
                cache.add_attention_mass(q, k, mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.h != self.kv)
        return self.dense(out.transpose(1, 2).reshape(b, t, self.h * self.hd))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, width, bias=False)
        self.up_proj = nn.Linear(hidden, width, bias=False)
        self.down_proj = nn.Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def route(
    logits: torch.Tensor,
    expert_bias: torch.Tensor | None,
    top_k: int,
    n_group: int,
    topk_group: int,
    scale: float,
    normalise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-limited top-k on sigmoid scores; the bias picks experts, the unbiased scores weight them.

    logits [N, E] fp32 -> (expert ids [N, k], weights [N, k] fp32).
    """
    scores = torch.sigmoid(logits)
    biased = scores + expert_bias if expert_bias is not None else scores
    n, e = biased.shape
    groups = biased.view(n, n_group, e // n_group)
    group_score = groups.topk(min(2, e // n_group), dim=-1).values.sum(-1)  # [N, G]
    keep = torch.zeros_like(group_score, dtype=torch.bool)
    keep.scatter_(1, group_score.topk(topk_group, dim=-1, sorted=False).indices, True)
    allowed = keep[:, :, None].expand_as(groups).reshape(n, e)
    ids = biased.masked_fill(~allowed, float("-inf")).topk(top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if normalise and top_k > 1:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return ids, weights * scale


# How the routed experts run (llada_cli/models/moe_dispatch.py): "grouped" (torch._grouped_mm on the weights
# in place, no host sync), "batched" (touched experts gathered and padded, one bmm chain), "loop" (one matmul
# chain per touched expert), or "auto":
#   GPU: batched up to BATCHED_DISPATCH_MAX_TOKENS, loop beyond: the measured-safe choice (H100: 2.43 ms per
#        MoE layer on a 32-token block). Grouped, where torch._grouped_mm has a sync-free kernel (bf16 on
#        Hopper/Blackwell), once GPU_GROUPED is True: tested equal to the loop on the CPU and built for
#        CUDA graphs, but never yet measured on a GPU, so it stays opt-in there
#        (LLADA_MOE_DISPATCH=grouped, or GPU_GROUPED).
#   CPU: grouped up to CPU_GROUPED_MAX_TOKENS, loop beyond. The CPU grouped_mm is itself one matmul per
#        expert, so it only saves the Python loop: measured with benchmarks/backbone.py (mid config, 2
#        threads, fp32, three runs) it is level with the loop or a few % ahead at 32-128 tokens, level
#        (+-8%) at 256-512, and behind by 4-18% at 1,024 and 23-35% at 2,048 (its [N*k, W]
#        intermediates fall out of cache; the loop's per-expert ones stay in). Batched is 3-4x slower.
MOE_DISPATCH = os.environ.get("LLADA_MOE_DISPATCH", "auto")
GPU_GROUPED = False  # auto on a GPU takes grouped where it runs; True once measured faster there
CPU_GROUPED_MAX_TOKENS = 128
# A GPU without a grouped kernel runs a block (times the CFG rows) batched, up to this many tokens: kernel
# launches, not bytes, bound a per-expert loop there; prompt prefills loop.
BATCHED_DISPATCH_MAX_TOKENS = 512
# Former switch, still honoured: "always" forces batched, "never" the loop; "cuda" defers to MOE_DISPATCH.
BATCHED_DISPATCH = "cuda"


class MoE(nn.Module):
    """Routed experts stacked as [E, out, in]; only experts that received a token are computed."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        d, w, e = cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts
        self.cfg = cfg
        self.gate = nn.Module()
        self.gate.weight = nn.Parameter(torch.empty(e, d))
        self.gate.register_buffer("expert_bias", torch.zeros(e, dtype=torch.float32))
        self.gate_proj = nn.Parameter(torch.empty(e, w, d))
        self.up_proj = nn.Parameter(torch.empty(e, w, d))
        self.down_proj = nn.Parameter(torch.empty(e, d, w))
        self.shared_experts = MLP(d, w * cfg.num_shared_experts) if cfg.num_shared_experts else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, D]
        ids, weights = self._route(flat)  # [N, k] each
        pairs = moe_dispatch.sort_pairs(ids, weights.to(flat.dtype))
        stacks = (self.gate_proj, self.up_proj, self.down_proj)  # [E, W, D], [E, W, D], [E, D, W]
        routed = moe_dispatch.RUNS[self.dispatch_for(flat)](flat, pairs, stacks)  # [N, D] fp32
        y = routed.to(flat.dtype)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)
        return y.view(shape)

    def _route(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The router in fp32 (the module-level `route`, looked up per call so meters can wrap it)."""
        cfg = self.cfg
        bias = self.gate.expert_bias.float() if cfg.moe_router_enable_expert_bias else None
        return route(
            flat.float() @ self.gate.weight.float().T,
            bias,
            cfg.num_experts_per_tok,
            cfg.n_group,
            cfg.topk_group,
            cfg.routed_scaling_factor,
            cfg.norm_topk_prob,
        )

    def dispatch_for(self, flat: torch.Tensor) -> str:
        """The dispatch this input runs with under MOE_DISPATCH (and the former BATCHED_DISPATCH)."""
        if BATCHED_DISPATCH in ("always", "never"):
            return "batched" if BATCHED_DISPATCH == "always" else "loop"
        if MOE_DISPATCH != "auto":
            if MOE_DISPATCH not in moe_dispatch.DISPATCHES:
                from ..errors import UsageError

                raise UsageError(
                    f"LLADA_MOE_DISPATCH {MOE_DISPATCH!r} is not auto or one of {', '.join(moe_dispatch.DISPATCHES)}"
                )
            return MOE_DISPATCH
        n, dims = flat.shape[0], (self.cfg.hidden_size, self.cfg.moe_intermediate_size)
        if flat.is_cuda:  # grouped asked about only once it is on by default there
            if GPU_GROUPED and moe_dispatch.grouped_supported(flat.device, flat.dtype, dims):
                return "grouped"
            return "batched" if n <= BATCHED_DISPATCH_MAX_TOKENS else "loop"
        if n > CPU_GROUPED_MAX_TOKENS:
            return "loop"
        return "grouped" if moe_dispatch.grouped_supported(flat.device, flat.dtype, dims) else "loop"


class DecoderLayer(nn.Module):
    def __init__(self, cfg: BackboneConfig, i: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention = Attention(cfg, i)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(i) else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, h, cos, sin, mask, cache, commit):
        h = h + self.attention(self.input_layernorm(h), cos, sin, mask, cache, commit)
        return h + self.mlp(self.post_attention_layernorm(h))


class LLaDA2MoeModel(nn.Module):
    """The backbone: embeddings, pre-norm layers, final norm, untied LM head over text + image ids."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.model = nn.Module()
        self.model.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def make_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.lm_head.weight
        devices = [layer.input_layernorm.weight.device for layer in self.model.layers]
        return KVCache(self.cfg, batch, max_len, p.device, p.dtype, devices)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        commit: bool = False,
        logits_from: int = 0,
    ) -> torch.Tensor:
        """input_ids/positions [B, T]; mask [B, 1, T, S] bool (True = attend) -> logits [B, T - logits_from, V]
        in fp32. With a cache, keys are the cached prefix followed by these T tokens; `commit` appends them."""
        first = self.model.word_embeddings.weight.device
        h = self.model.word_embeddings(input_ids.to(first))
        cos, sin = rope_cos_sin(positions.to(first), self.cfg.rotary_dim, self.cfg.rope_theta, h.dtype)
        for layer in self.model.layers:
            if h.device != (dev := layer.input_layernorm.weight.device):  # layers split over GPUs
                h, cos, sin = h.to(dev), cos.to(dev), sin.to(dev)
                mask = mask.to(dev) if mask is not None else None
            h = layer(h, cos, sin, mask, cache, commit)
        if cache is not None and commit:
            cache.length += input_ids.shape[1]
        h = h[:, logits_from:].to(self.lm_head.weight.device)  # the final norm sits with the head
        return self.lm_head(self.model.norm(h)).float()


def block_causal_mask(length: int, block: int, device=None) -> torch.Tensor:
    """[length, length] bool: token i sees token j iff block(j) <= block(i); blocks start at position 0."""
    blocks = torch.arange(length, device=device) // block
    return blocks[None, :] <= blocks[:, None]


_EXPERT_KEY = re.compile(
    r"^(model\.layers\.\d+\.mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$"
)
_STACKED_KEY = re.compile(r"^(model\.layers\.\d+\.mlp)\.experts\.(gate_proj|up_proj|down_proj)$")


def sanitize_key(name: str) -> tuple[str, int | None]:
    """Checkpoint name -> (our parameter name, expert index to write into, or None for a whole tensor)."""
    if m := _EXPERT_KEY.match(name):
        return f"{m.group(1)}.{m.group(3)}", int(m.group(2))
    if m := _STACKED_KEY.match(name):
        return f"{m.group(1)}.{m.group(2)}", None
    return name, None


_ROUTED_EXPERT = re.compile(r"\.mlp\.experts\.(?:\d+\.)?(?:gate|up|down)_proj(?:\.weight)?$")


def quant_predicate(name: str) -> bool:
    """Which checkpoint tensors `--quant` packs: the routed experts (94% of the bytes). The router, norms,
    embeddings, attention, dense and shared MLPs and the LM head keep their precision."""
    return _ROUTED_EXPERT.search(name) is not None


def cast_predicate(name: str) -> bool:
    """Whether a tensor follows the compute dtype; the router's expert bias stays fp32 (as it is trained)."""
    return not name.endswith("expert_bias")
