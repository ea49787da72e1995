"""Memory planner: estimate each stage's weights and activations before loading, then choose a placement.

Pure arithmetic over the manifests (no weight is read), so `llada doctor --plan` and `--dry-run` can say
whether a run fits, and how, before minutes of loading. Weight bytes are the quantizers' storage:
int8 = 1 B/param + an fp32 scale per output row; nf4 = 0.5 B/param + an fp32 absmax per 64 elements;
fp8 = 1 B/param + an fp32 scale per 128x128 block. Activations are conservative upper bounds.
torch is imported inside functions only (the manifests' modules need it), never at import time.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..limits import CHOICES
from ..runtime.schemes import quant_bytes

GB = 10**9
CUDA_RESERVE = 1 * GB  # CUDA context + allocator slack, per GPU
HOST_RESERVE = 2 * GB  # Python, torch and the loader's one-tensor-at-a-time buffer
CPU_FP32_FACTOR = 2  # device.resolve_device computes in fp32 on the CPU: twice the bf16 bytes
BLOCK = 32  # tokens per diffusion block
QUANTS, DECODER_QUANTS = CHOICES["quant"], CHOICES["decoder_quant"]
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1}
CHAT_PROMPT, GENERATE_PROMPT, CHAT_MAX_TOKENS = 1024, 300, 2048  # typical prompt tokens per command
TOKENIZER_IMAGE_PX = 800  # an input image as the image tokenizer sees it (about 2,500 patches)
VQ_PX, LATENT_PX = 32, 16  # output pixels per semantic image token / per decoder latent token
BACKBONE_HIDDEN_COPIES, BACKBONE_FFN_COPIES, LOGIT_COPIES = 10, 3, 3
TOKENIZER_HIDDEN_COPIES, TOKENIZER_FFN_COPIES, SCORE_COPIES = 16, 4, 2
DECODER_DIM_COPIES, DECODER_FFN_COPIES, SIGVQ_COPIES, VAE_COPIES = 8, 3, 4, 5
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_BLOCK = re.compile(r"^(layers|noise_refiner|context_refiner)\.(\d+)\.")
STAGES = {
    "chat": ("backbone",),
    "generate": ("backbone", "sigvq", "decoder", "vae"),
    "edit": ("image_tokenizer", "backbone", "sigvq", "decoder", "vae"),
    "interleave": ("backbone", "sigvq", "decoder", "vae"),
}
DEFAULT_ROWS = {"chat": 1, "generate": 2, "edit": 3, "interleave": 2}
PHASES = (("image_tokenizer",), ("backbone",), ("sigvq", "decoder"), ("vae",))
RANK = {s: i for i, s in enumerate(("resident", "phased", "split", "offload", "cpu", "does-not-fit"))}


def _pieces(manifest: dict, piece_of, quantized, quants) -> dict[str, tuple[int, ...]]:
    """Bytes per piece (layer or block) for each precision; unquantized tensors keep their dtype."""
    index = [(piece_of(k), quantized(k, s.shape), s) for k, s in manifest.items()]
    out = {}
    for q in quants:
        pieces = [0] * (1 + max(i for i, _, _ in index))
        for i, quant, spec in index:
            pieces[i] += quant_bytes(spec.shape, q) if quant else spec.numel * DTYPE_BYTES.get(spec.dtype, 2)
        out[q] = tuple(pieces)
    return out


def _backbone_pieces(cfg) -> dict[str, tuple[int, ...]]:
    """Per layer (embedding with the first, norm and head with the last); only routed experts quantize.
    An FP8 checkpoint is sized by the quant it will run with (fp8 where kept, bf16 where dequantized)."""
    from ..models.llada2_moe import backbone_manifest, quant_predicate

    plain = replace(cfg, use_fp8_experts=False, llada_fp8_experts=None, quantization_config=None)

    def layer(name: str) -> int:
        m = _LAYER.match(name)
        return int(m.group(1)) if m else (0 if "embeddings" in name else cfg.num_hidden_layers - 1)

    return _pieces(backbone_manifest(plain), layer, lambda name, _shape: quant_predicate(name), QUANTS)


def _decoder_pieces(cfg) -> dict[str, tuple[int, ...]]:
    """Per transformer block, in run order; embedders and final layers ride with the first block."""
    from ..models.zimage import decoder_manifest, quant_predicate

    refiner = cfg.n_layers + cfg.n_refiner_layers
    base = {"layers": 0, "noise_refiner": cfg.n_layers, "context_refiner": refiner}

    def block(name: str) -> int:
        m = _BLOCK.match(name)
        return base[m.group(1)] + int(m.group(2)) if m else 0

    return _pieces(decoder_manifest(cfg), block, quant_predicate, DECODER_QUANTS)


@dataclass(frozen=True)
class ModelInfo:
    """A model's configs and its weight bytes per precision, read off the manifests once."""

    backbone: Any  # BackboneConfig
    decoder: Any  # DecoderConfig
    tokenizer: Any  # ImageTokenizerConfig
    vae: dict
    backbone_pieces: dict[str, tuple[int, ...]]  # quant -> bytes per layer
    decoder_pieces: dict[str, tuple[int, ...]]  # decoder quant -> bytes per block
    tokenizer_bytes: int
    sigvq_bytes: int
    vae_bytes: int


def model_info(backbone, decoder, tokenizer, vae: dict, vae_manifest=None) -> ModelInfo:
    """Sizes of every component (bf16 unless quantized); SigVQ maps image codes to the decoder's width."""
    from ..models.siglip_vq import image_tokenizer_manifest
    from ..models.sigvq import SigVQConfig, sigvq_manifest
    from ..models.tensors import param_count

    if vae_manifest is None:
        from ..models.vae import vae_manifest as build  # imports diffusers (seconds): file headers win

        vae_manifest = build(vae)
    sigvq = SigVQConfig(backbone.image_vocab_size, decoder.cap_feat_dim)
    sizes = [image_tokenizer_manifest(tokenizer), sigvq_manifest(sigvq), vae_manifest]
    return ModelInfo(
        backbone, decoder, tokenizer, vae, _backbone_pieces(backbone), _decoder_pieces(decoder),
        *(2 * param_count(m) for m in sizes),
    )  # fmt: skip


@lru_cache(maxsize=1)
def real_model() -> ModelInfo:
    """LLaDA2.0-Uni from its recorded configs (no download needed)."""
    from ..models.llada2_moe import BackboneConfig
    from ..models.siglip_vq import ImageTokenizerConfig
    from ..models.zimage import DecoderConfig
    from ..weights import real_configs as rc

    return model_info(
        BackboneConfig.from_dict(rc.BACKBONE), DecoderConfig.from_dict(rc.DECODER_TURBO),
        ImageTokenizerConfig.from_dict(rc.IMAGE_TOKENIZER), rc.VAE,
    )  # fmt: skip


def checkpoint_model(root: Path, decoder: str = "turbo") -> ModelInfo:
    """A checkpoint folder's configs; the VAE is sized from its file header when the file is there."""
    from ..checkpoint.layout import DECODERS, weight_files
    from ..checkpoint.safetensors_io import read_headers
    from ..models.tensors import TensorSpec

    root = Path(root)
    names = [DECODERS[decoder], *(d for d in DECODERS.values() if d != DECODERS[decoder])]
    dec = next((n for n in names if (root / n / "config.json").is_file()), names[0])
    vae = None
    if (root / "vae" / "diffusion_pytorch_model.safetensors").is_file():
        vae = {k: TensorSpec(tuple(t.shape)) for k, t in read_headers(weight_files(root, "vae")).items()}
    configs = [_config_or_real(root, n) for n in ("backbone", dec, "image_tokenizer", "vae")]
    return model_info(*configs, vae)


def _config_or_real(root: Path, name: str):
    """A component's config from the folder; one a command never loads (a chat-only download has no
    decoder) is sized from the real model's recorded config instead."""
    from ..checkpoint.components import read_config
    from ..checkpoint.layout import COMPONENTS

    if name == "backbone" or COMPONENTS[name].path(root, "config.json").is_file():
        return read_config(root, name)
    real = real_model()
    return {"image_tokenizer": real.tokenizer, "vae": real.vae}.get(name, real.decoder)


@dataclass(frozen=True)
class Settings:
    """What a run asks for; `rows` are guidance rows (None: the command's default)."""

    command: str = "generate"
    size: int | tuple[int, int] = 1024  # output px, square or (w, h)
    decoder: str = "turbo"
    rows: int | None = None
    quant: str = "none"
    decoder_quant: str = "none"
    images: int = 0  # input images of a chat
    source_px: int = 512  # side of an edit's source image
    max_tokens: int = CHAT_MAX_TOKENS

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("command", self.command, STAGES),
            ("quant", self.quant, QUANTS),
            ("decoder quant", self.decoder_quant, DECODER_QUANTS),
            ("decoder", self.decoder, ("turbo", "normal")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")

    @property
    def wh(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)


@dataclass(frozen=True)
class Need:
    """One stage's memory; `pieces` are the parts that may sit on different devices (layers, blocks)."""

    stage: str
    weights: int
    activations: int
    pieces: tuple[int, ...] = ()


def kv_bytes_per_token(cfg) -> int:
    """layers x (K and V) x kv heads x head dim x 2 B: 40 KB a token for the real backbone."""
    return cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * 2


def backbone_activations(cfg, rows: int, context: int) -> int:
    """KV cache + a full-context working set (hidden x10, widest FFN x3, fp32 router scores)
    + math-backend attention scores rows x heads x S x S (worst case: a whole-sequence recompute)
    + fp32 logits of one block, x3 for softmax and sampling copies."""
    moe = (cfg.num_experts_per_tok + cfg.num_shared_experts) * cfg.moe_intermediate_size
    hidden = cfg.hidden_size * BACKBONE_HIDDEN_COPIES + max(cfg.intermediate_size, moe) * BACKBONE_FFN_COPIES
    per_token = kv_bytes_per_token(cfg) + 2 * hidden + 4 * cfg.num_experts
    scores = rows * cfg.num_attention_heads * context * context * 2
    return rows * context * per_token + scores + rows * BLOCK * cfg.vocab_size * 4 * LOGIT_COPIES


def tokenizer_activations(cfg, px: int) -> int:
    """Per patch hidden x16 + MLP x4 in bf16, plus fp32 attention scores and softmax, heads x N x N."""
    v = cfg.vision
    n = (px // v.patch_size) ** 2
    per_patch = (v.hidden_size * TOKENIZER_HIDDEN_COPIES + v.intermediate_size * TOKENIZER_FFN_COPIES) * 2
    return n * per_patch + v.num_heads * n * n * 4 * SCORE_COPIES


def decoder_activations(cfg, w: int, h: int, batch: int) -> int:
    """batch x U x (dim x8 + ffn x3) x 2 B, U = latent + condition tokens. Flash/efficient SDPA on the
    GPU keeps no U x U scores; the CPU math backend would add heads x U^2 x 4 B (8 GB at 1024 px)."""
    u = 2 * (w // LATENT_PX) * (h // LATENT_PX)
    return batch * u * (cfg.dim * DECODER_DIM_COPIES + cfg.ffn_dim * DECODER_FFN_COPIES) * 2


def vae_activations(raw: dict, w: int, h: int) -> int:
    """The widest full-resolution tensors (block_out_channels[1] after the last upsampler, 256 for FLUX)
    x5: GroupNorm's fp32 copy, the conv output and the skip. About 2.7 GB at 1024 px."""
    ch = raw.get("block_out_channels", [128, 256])
    return VAE_COPIES * ch[min(1, len(ch) - 1)] * w * h * 2


def context_tokens(model: ModelInfo, s: Settings) -> int:
    """Backbone sequence: prompt + input image tokens + what is generated (text, or image codes)."""
    w, h = s.wh
    patch = model.tokenizer.vision.patch_size
    if s.command == "chat":
        return CHAT_PROMPT + s.images * (TOKENIZER_IMAGE_PX // patch) ** 2 + s.max_tokens
    source = (s.source_px // patch) ** 2 if s.command == "edit" else 0
    return GENERATE_PROMPT + source + (w // VQ_PX) * (h // VQ_PX)


def estimate(model: ModelInfo, s: Settings) -> list[Need]:
    """Each stage the command runs, in run order, with its weight and peak activation bytes."""
    (w, h), m, rows = s.wh, model, s.rows or DEFAULT_ROWS[s.command]
    layers, blocks = m.backbone_pieces[s.quant], m.decoder_pieces[s.decoder_quant]
    latents = (w // LATENT_PX) * (h // LATENT_PX)
    acts = {
        "image_tokenizer": tokenizer_activations(m.tokenizer, max(TOKENIZER_IMAGE_PX, s.source_px)),
        "backbone": backbone_activations(m.backbone, rows, context_tokens(m, s)),
        "sigvq": SIGVQ_COPIES * m.decoder.cap_feat_dim * 2 * latents,
        "decoder": decoder_activations(m.decoder, w, h, 1 if s.decoder == "turbo" else 2),
        "vae": vae_activations(m.vae, w, h),
    }
    weights = {"image_tokenizer": m.tokenizer_bytes, "sigvq": m.sigvq_bytes, "vae": m.vae_bytes}
    weights.update(backbone=sum(layers), decoder=sum(blocks))
    pieces = {"backbone": layers, "decoder": blocks}
    stages = ("image_tokenizer", "backbone") if s.command == "chat" and s.images else STAGES[s.command]
    return [Need(n, weights[n], acts[n], pieces.get(n, ())) for n in stages]


def _phases(needs: list[Need]) -> list[list[Need]]:
    return [p for p in ([n for n in needs if n.stage in names] for names in PHASES) if p]


def phase_peak(phase: list[Need]) -> int:
    """Stages loaded together; their activations come and go one stage at a time."""
    return sum(n.weights for n in phase) + max(n.activations for n in phase)


def phased_peak(needs: list[Need]) -> int:
    """Load, run, free in turn: the largest phase (SigVQ shares the decoder's phase)."""
    return max(phase_peak(p) for p in _phases(needs))


@dataclass
class Placement:
    """Where one stage runs; `offload`: its weights stay in host RAM and stream through the GPU."""

    stage: str
    device: str
    weights: int
    activations: int
    layer_devices: list[str] | None = None  # backbone: one device per layer
    offload: bool = False


@dataclass
class Plan:
    strategy: str  # resident, phased, split, offload, cpu or does-not-fit
    stages: list[Placement]
    peak: dict[str, int]  # estimated peak bytes per device, reserves included
    reason: str
    suggestions: list[str] = field(default_factory=list)


def _at(n: Need, device: str, **kw) -> Placement:
    return Placement(n.stage, device, n.weights, n.activations, **kw)


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def _plan(strategy: str, stages: list[Placement], usages: list[dict[str, int]], reason: str) -> Plan:
    """Peak per device = its largest phase, plus the CUDA or host reserve."""
    devices = sorted({d for u in usages for d in u if d != "cpu"})
    peak = {d: max(u.get(d, 0) for u in usages) + CUDA_RESERVE for d in devices}
    peak["cpu"] = max(u.get("cpu", 0) for u in usages) + HOST_RESERVE
    return Plan(strategy, stages, peak, reason)


def _single(needs: list[Need], room: list[int], best: int) -> Plan | None:
    dev = f"cuda:{best}"
    for strategy, peak, why in (
        ("resident", phase_peak(needs), "all stages stay loaded together"),
        ("phased", phased_peak(needs), "each stage fits alone, so they load, run and free in turn"),
    ):
        if peak <= room[best]:
            reason = f"{dev} has {_gb(room[best])} usable and the {strategy} peak is {_gb(peak)}: {why}"
            return _plan(strategy, [_at(n, dev) for n in needs], [{dev: peak}], reason)
    return None


def _spread(pieces: tuple[int, ...], caps: list[tuple[str, float]]) -> list[str] | None:
    """Fill devices in order, as accelerate's device_map does; None when the pieces do not all fit."""
    out, i, used = [], 0, 0
    for size in pieces:
        while i < len(caps) and used + size > caps[i][1]:
            i, used = i + 1, 0
        if i == len(caps):
            return None
        out.append(caps[i][0])
        used += size
    return out


def _layer_usage(n: Need, layers: list[str], extra: int) -> dict[str, int]:
    """Bytes per device: its layers, plus activations and `extra` once on every GPU used."""
    usage: dict[str, int] = {}
    for dev, size in zip(layers, n.pieces, strict=True):
        first = dev not in usage and dev != "cpu"
        usage[dev] = usage.get(dev, 0) + size + (n.activations + extra if first else 0)
    return usage


def _split(needs: list[Need], room: list[int], best: int) -> Plan | None:
    """Backbone layers shared out in proportion to free memory; the other phases on the freest GPU."""
    bb, dev = next((n for n in needs if n.stage == "backbone"), None), f"cuda:{best}"
    rest = [p for p in _phases(needs) if bb not in p]
    if bb is None or any(phase_peak(p) > room[best] for p in rest):
        return None
    caps = [(f"cuda:{i}", max(0, r - bb.activations)) for i, r in enumerate(room)]
    share = sum(bb.pieces) / max(1, sum(c for _, c in caps))
    balanced = [(d, min(c, c * share + max(bb.pieces))) for d, c in caps]
    layers = _spread(bb.pieces, balanced) or _spread(bb.pieces, caps)
    if layers is None:
        return None
    stages = [_at(n, layers[0], layer_devices=layers) if n is bb else _at(n, dev) for n in needs]
    reason = f"the backbone ({_gb(bb.weights)}) fits no single GPU: its layers are split over "
    reason += f"{', '.join(sorted(set(layers)))} by free memory; the other stages run on {dev}, the freest"
    usages = [_layer_usage(bb, layers, 0)] + [{dev: phase_peak(p)} for p in rest]
    return _plan("split", stages, usages, reason)


def _offload_phase(phase: list[Need], room: list[int], best: int):
    """(placements, usage, why): on the GPU if it fits, else layers or blocks in host RAM; None if no way."""
    dev, top = f"cuda:{best}", phase[-1]
    if phase_peak(phase) <= room[best]:
        return [_at(n, dev) for n in phase], {dev: phase_peak(phase)}, ""
    if top.stage == "backbone":
        buffer = max(top.pieces)  # a CPU-held layer is copied in before it runs
        caps = [(f"cuda:{i}", r - top.activations - buffer) for i, r in enumerate(room)]
        layers = _spread(top.pieces, [*caps, ("cpu", math.inf)]) or []
        usage = _layer_usage(top, layers, buffer)
        usage.setdefault(dev, top.activations + buffer)
        if any(v > room[int(d[5:])] for d, v in usage.items() if d != "cpu"):
            return None
        gpus = sorted({d for d in layers if d != "cpu"}) or [dev]
        kept = len(layers) - layers.count("cpu")
        why = f"{kept} of {len(layers)} backbone layers stay on {', '.join(gpus)}, the rest stream from RAM"
        return [_at(top, dev, layer_devices=layers, offload="cpu" in layers)], usage, why
    if top.stage == "decoder":
        gpu = sum(n.weights for n in phase[:-1]) + max(n.activations for n in phase) + 2 * max(top.pieces)
        if gpu > room[best]:
            return None
        placed = [_at(n, dev) for n in phase[:-1]] + [_at(top, dev, offload=True)]
        return placed, {dev: gpu, "cpu": top.weights}, "the decoder streams block by block from host RAM"
    usage = {"cpu": CPU_FP32_FACTOR * phase_peak(phase)}
    return [_at(n, "cpu") for n in phase], usage, f"{top.stage} runs on the CPU"


def _offload(needs: list[Need], room: list[int], best: int) -> Plan | None:
    got = [_offload_phase(p, room, best) for p in _phases(needs)]
    if None in got:
        return None
    why = "; ".join(g[2] for g in got if g[2])
    reason = f"the largest stage needs {_gb(phased_peak(needs))}, cuda:{best} has {_gb(room[best])}: {why}"
    return _plan("offload", [p for g in got for p in g[0]], [g[1] for g in got], reason + " (slow)")


def _cpu(needs: list[Need], had_gpu: bool) -> Plan:
    head = "the GPU is too small even to stream layers through" if had_gpu else "NO GPU IS VISIBLE"
    reason = f"{head}: EVERYTHING RUNS ON THE CPU in fp32, expect minutes per answer or image"
    usage = {"cpu": CPU_FP32_FACTOR * phased_peak(needs)}
    return _plan("cpu", [_at(n, "cpu") for n in needs], [usage], reason)


def _hints(plan: Plan) -> list[str]:
    """Generic next settings, by what was pushed off the GPU (`plan` replaces them with checked ones)."""
    ram = ["more host RAM, or close other programs"] if plan.strategy == "does-not-fit" else []
    if all(p.device == "cpu" for p in plan.stages):
        return [*ram, "a (larger) CUDA GPU: the planner then offloads what does not fit"]
    off = {p.stage for p in plan.stages if p.offload or p.device == "cpu" or "cpu" in (p.layer_devices or [])}
    out = ["--quant nf4"] if "backbone" in off or plan.strategy == "phased" else []
    out += ["--decoder-quant nf4", "--size 512"] if off & {"decoder", "vae"} else []
    return out + ram + (["a GPU with more free memory (--max-vram caps what llada takes)"] if off else [])


def place(
    needs: list[Need], gpus: list[int], host_ram: int | None = None, max_vram: float | None = None
) -> Plan:
    """The first that fits: resident > phased > split (several GPUs) > offload > cpu, else does-not-fit.
    `gpus`: free bytes per visible GPU; `host_ram`: available bytes (None: unknown); `max_vram` (GB)
    caps what llada takes of each GPU."""
    caps = [min(g, int(max_vram * GB)) if max_vram else g for g in gpus]
    room = [g - CUDA_RESERVE for g in caps]
    plan = None
    if room:
        best = max(range(len(room)), key=room.__getitem__)
        plan = _single(needs, room, best) or (_split(needs, room, best) if len(room) > 1 else None)
        plan = plan or _offload(needs, room, best)
    plan = plan or _cpu(needs, bool(room))
    if host_ram is not None and plan.peak["cpu"] > host_ram:
        why = f"the {plan.strategy} plan needs {_gb(plan.peak['cpu'])} of host RAM, {_gb(host_ram)} is free"
        plan = replace(plan, strategy="does-not-fit", reason=why)
    plan.suggestions = _hints(plan)
    return plan


def _alternatives(s: Settings, max_vram: float | None):
    """(flag, settings, max_vram) to try, cheapest change first."""
    decoder = "decoder" in STAGES[s.command]
    if max_vram:
        yield "a larger --max-vram", s, None
    if s.quant != "nf4":
        yield "--quant nf4", replace(s, quant="nf4"), max_vram
    if decoder and s.decoder_quant != "nf4":
        yield "--decoder-quant nf4", replace(s, decoder_quant="nf4"), max_vram
        yield "--quant nf4 --decoder-quant nf4", replace(s, quant="nf4", decoder_quant="nf4"), max_vram
    if decoder and s.decoder == "normal":
        yield "--decoder turbo", replace(s, decoder="turbo"), max_vram
    if decoder and max(s.wh) > 512:
        yield "--size 512", replace(s, size=512), max_vram


def plan(model: ModelInfo, s: Settings, gpus: list[int], host_ram: int | None = None,
         max_vram: float | None = None) -> Plan:  # fmt: skip
    """`place` for these settings; suggestions: changes giving a better strategy or less host RAM."""
    result = place(estimate(model, s), gpus, host_ram, max_vram)
    rank, better = RANK[result.strategy], []
    tried = {f"--quant {s.quant}", f"--decoder-quant {s.decoder_quant}"}
    for flag, alt, cap in _alternatives(s, max_vram) if result.strategy not in ("resident", "cpu") else ():
        other, tried = place(estimate(model, alt), gpus, host_ram, cap), tried | {flag}
        same = RANK[other.strategy] == rank < RANK["does-not-fit"]
        if RANK[other.strategy] < rank or (same and other.peak["cpu"] < result.peak["cpu"]):
            better.append(f"{flag} (-> {other.strategy})")  # a better strategy, or less in host RAM
    result.suggestions = better[:4] or [h for h in result.suggestions if h not in tried]
    return result


def detect() -> tuple[list[int], int | None]:
    """Free bytes per visible GPU, and MemAvailable of the host (None where /proc is absent)."""
    from ..runtime.device import gpus

    meminfo = Path("/proc/meminfo")
    lines = meminfo.read_text().splitlines() if meminfo.is_file() else []
    host = next((int(x.split()[1]) * 1024 for x in lines if x.startswith("MemAvailable:")), None)
    return [g["free_bytes"] for g in gpus()[1]], host


def plan_to_dict(p: Plan) -> dict:
    return asdict(p)


def render_plan(p: Plan) -> list[str]:
    """A compact table: stage, device, weights and activations; then peaks, reason and suggestions."""
    devices = []
    for s in p.stages:
        dev = s.device + (" (streamed)" if s.offload else "")
        if s.layer_devices:
            counts = {d: s.layer_devices.count(d) for d in dict.fromkeys(s.layer_devices)}
            dev = "layers " + ", ".join(f"{c} on {d}" for d, c in counts.items())
        devices.append(dev)
    w = max(map(len, devices)) + 2
    lines = [f"{'stage':<16}{'device':<{w}}{'weights GB':>11}{'activ. GB':>11}"]
    for s, dev in zip(p.stages, devices, strict=True):
        lines.append(f"{s.stage:<16}{dev:<{w}}{s.weights / GB:>11.2f}{s.activations / GB:>11.2f}")
    lines.append("peak: " + ", ".join(f"{d} {_gb(v)}" for d, v in p.peak.items()))
    return [*lines, f"{p.strategy}: {p.reason}", *(f"try: {x}" for x in p.suggestions)]


def memory_table(quants=QUANTS, cases=(Settings("chat"), Settings(size=512), Settings(size=1024))) -> str:
    """Markdown from the real configs: weights, largest activation, and single-GPU peaks with the
    CUDA reserve. The decoder takes the backbone's quant where it has it (no fp8 decoder), else bf16."""
    rows = []
    for s, q in ((s, q) for s in cases for q in quants):
        dq = q if q in DECODER_QUANTS else "none"
        needs = estimate(real_model(), replace(s, quant=q, decoder_quant=dq))
        case = s.command if s.command == "chat" else f"{s.command} {s.wh[0]}x{s.wh[1]} {s.decoder}"
        cells = [sum(n.weights for n in needs), max(n.activations for n in needs)]
        cells += [phase_peak(needs) + CUDA_RESERVE, phased_peak(needs) + CUDA_RESERVE]
        rows.append(f"| {case} | {q} / {dq} | " + " | ".join(f"{c / GB:.2f}" for c in cells) + " |")
    head = "| case | quant / decoder-quant | weights GB | max activations GB | resident peak GB "
    head += "| phased peak GB |"
    return "\n".join([head, "|---|---|---|---|---|---|", *rows])


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--table"]:
        sys.exit("usage: python -m llada_cli.memory.planner --table")
    print(memory_table())
