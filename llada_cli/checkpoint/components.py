"""Strict loading of each component: config -> manifest -> header check -> stream tensors to the device.

Every weight file's header is checked against the manifest before a byte of tensor data is read, so a
missing, unexpected, mis-shaped or wrongly typed tensor is refused up front with its name and file.
Modules are built on the meta device and tensors are assigned as they stream in: no random init and no
second copy of a component in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import CheckpointMismatch, CorruptFile, UsageError
from ..models.config_base import read_json
from ..models.llada2_moe import BackboneConfig, backbone_manifest, sanitize_key
from ..models.siglip_vq import UNUSED_PREFIXES, ImageTokenizerConfig, image_tokenizer_manifest
from ..models.sigvq import SigVQConfig, sigvq_manifest
from ..models.tensors import TensorSpecs, param_count
from ..models.vae import build_vae_on_meta, vae_manifest
from ..models.zimage import DecoderConfig, decoder_manifest, to_diffusers_name
from .layout import COMPONENTS, check_component
from .safetensors_io import read_headers, stream_tensors
from .verify import FoundTensor, check_against

_DTYPE_NAMES = {"torch.bfloat16": "BF16", "torch.float32": "F32", "torch.float16": "F16"}


def read_config(root: Path, name: str) -> Any:
    """The parsed config object of a component (SigVQ has none: its sizes come from the file)."""
    comp = COMPONENTS[name]
    if name == "backbone":
        return BackboneConfig.from_dict(read_json(comp.path(root, "config.json")), "config.json")
    if name == "image_tokenizer":
        return ImageTokenizerConfig.from_dict(read_json(comp.path(root, "config.json")))
    if name in ("decoder", "decoder-turbo"):
        return DecoderConfig.from_dict(read_json(comp.path(root, "config.json")), f"{name}/config.json")
    if name == "vae":
        return read_json(comp.path(root, "config.json"))
    raise KeyError(name)


def manifest_for(name: str, config: Any) -> TensorSpecs:
    builders = {
        "backbone": backbone_manifest,
        "image_tokenizer": image_tokenizer_manifest,
        "decoder": decoder_manifest,
        "decoder-turbo": decoder_manifest,
        "vae": vae_manifest,
        "sigvq": sigvq_manifest,
    }
    return builders[name](config)


@dataclasses.dataclass
class Inspection:
    """What a component holds on disk, checked against its config."""

    component: str
    files: list[Path]
    tensors: int
    params: int
    bytes: int
    detail: str = ""


def _unused(found: Iterable[str]) -> list[str]:
    return [k for k in found if k.startswith(UNUSED_PREFIXES)]


def _sigvq_found(path: Path) -> dict[str, FoundTensor]:
    return {
        k: FoundTensor(tuple(t.shape), _DTYPE_NAMES.get(str(t.dtype), str(t.dtype)), path.name)
        for k, t in load_sigvq_file(path).items()
    }


def inspect_component(root: Path, name: str, config: Any = None) -> Inspection:
    """Check presence, headers and the full manifest of one component without reading tensor data."""
    root = Path(root)
    files = check_component(root, name)
    if name == "tokenizer":
        return _inspect_tokenizer(root)
    if name == "sigvq":
        found = _sigvq_found(files[0])
        config = SigVQConfig.from_shapes({k: v.shape for k, v in found.items()})
    else:
        found = read_headers(files)
        config = config if config is not None else read_config(root, name)
        if name == "backbone" and config.fp8_experts:
            config = dataclasses.replace(config, fp8_scale_suffix=fp8_scale_suffix(found))
    manifest = manifest_for(name, config)
    check_against(name, found, manifest, allowed_extra=_unused(found))
    return Inspection(name, files, len(found), param_count(manifest), sum(f.stat().st_size for f in files))


FP8_SCALE_SUFFIXES = ("_scale_inv", "_scale")  # DeepSeek-style and compressed-tensors-style names


def fp8_scale_suffix(names) -> str:
    """Which name the FP8 files give their expert block scales (both are multiplied in)."""
    for suffix in FP8_SCALE_SUFFIXES:
        if any(n.endswith(suffix) and ".mlp.experts." in n for n in names):
            return suffix
    return FP8_SCALE_SUFFIXES[0]


def _inspect_tokenizer(root: Path) -> Inspection:
    """Parse tokenizer.json, find every required special token, and match `<IMAGE0>` to the config."""
    from ..inputs.tokenizer import TextTokenizer

    path = root / "tokenizer.json"
    tok = TextTokenizer(path)
    if (root / "config.json").is_file():
        tok.check_image_offset(read_config(root, "backbone").image_token_offset)
    return Inspection(
        "tokenizer", [path], 0, 0, path.stat().st_size, f"vocab {tok.vocab_size}, special tokens present"
    )


def load_sigvq_file(path: Path) -> dict[str, Any]:
    """`sigvq_embedding.pt` is a pickled state dict: loaded with weights_only=True, never as code."""
    import pickle
    import zipfile

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise CorruptFile(
            f"{path} cannot be read as a weights-only state dict: {exc}", "re-run `llada download MODEL`"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptFile(f"{path} does not hold a plain state dict of tensors")
    return state


def load_state(
    root: Path, name: str, device: str = "cpu", dtype: Any = None, config: Any = None
) -> dict[str, Any]:
    """Strictly load a component's tensors as a state dict (checkpoint names), cast to `dtype` if given."""
    info = inspect_component(root, name, config)
    if name == "sigvq":
        items: Iterable[tuple[str, Any]] = load_sigvq_file(info.files[0]).items()
    else:
        items = stream_tensors(info.files, device)
    skip = set(UNUSED_PREFIXES)
    out: dict[str, Any] = {}
    for key, tensor in items:
        if any(key.startswith(p) for p in skip):
            continue
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[key] = tensor.to(device)
    return out


def _assign(module: Any, name: str, tensor: Any) -> None:
    import torch

    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if attr == "weight" and hasattr(owner, "store_weight"):  # a QuantLinear packs it as it arrives
        owner.store_weight(tensor)
    elif attr in owner._parameters:
        owner._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=False)
    elif attr in owner._buffers:
        owner._buffers[attr] = tensor
    else:
        raise CheckpointMismatch(f"{name} has no place in {type(module).__name__}")


def _check_no_meta(module: Any) -> None:
    left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    left += [f"{n} [{i}]" for n, m in module.named_modules() if hasattr(m, "missing") for i in m.missing()]
    if left:
        raise CheckpointMismatch(f"{type(module).__name__} has no weights for {', '.join(left[:3])}")


def load_backbone(
    root: Path, device: str = "cpu", dtype: Any = None, quant: str = "none", layer_devices=None
):
    """The backbone module, experts stacked [E, out, in] as their per-expert tensors stream in.

    With `quant` int8 / nf4 / fp8 each routed expert is packed as it arrives (llada_cli.runtime.quant), so host
    memory never holds the full-precision experts. Block-FP8 experts (the FP8 repo) stay in FP8 on FP8
    GPUs (quant none or fp8) and are dequantised as they arrive elsewhere. `model.quant_report` says what
    was done. `layer_devices` (from the memory plan, see llada_cli.runtime.placement) splits the layers over GPUs
    or keeps some layers' experts in host RAM; each tensor goes straight to its place."""
    import logging

    import torch

    from ..models.llada2_moe import LLaDA2MoeModel, cast_predicate
    from ..runtime.placement import host_experts, tensor_device
    from ..runtime.quant import report_for

    def place(name: str) -> str:
        return tensor_device(name, layer_devices, device) if layer_devices else device

    dtype = dtype or torch.bfloat16
    cfg: BackboneConfig = read_config(root, "backbone")
    info = inspect_component(root, "backbone", cfg)
    scheme, note = _expert_scheme(quant, cfg.fp8_experts, device)
    if note:
        logging.getLogger("llada").warning("%s", note)
    plain = dataclasses.replace(cfg, use_fp8_experts=False, llada_fp8_experts=None, quantization_config=None)
    with torch.device("meta"):
        model = LLaDA2MoeModel(plain)
    _expert_stacks(model, scheme, place, dtype, cfg.fp8_block)
    pending: dict[str, dict[str, Any]] = {}  # FP8 weight and scale may arrive in either order or shard
    for name, tensor in stream_tensors(info.files, "cpu" if layer_devices else device):
        if cfg.fp8_experts and ".mlp.experts." in name:
            base, part = _fp8_part(name)
            parts = pending.setdefault(base, {})
            parts[part] = tensor
            if len(parts) == 2:
                _put_fp8(model, base, pending.pop(base), scheme, cfg.fp8_block, dtype)
            continue
        target, expert = sanitize_key(name)
        if ".mlp.experts." in name:
            _put_experts(model, target, expert, tensor, dtype)
        else:
            kind = dtype if cast_predicate(target) else torch.float32
            _assign(model, target, tensor.to(place(target), kind))
    _check_no_meta(model)
    if layer_devices:
        host_experts(model, layer_devices, device)
    model.quant_report = report_for(model, "backbone", scheme or "none", note)
    if scheme:
        logging.getLogger("llada.quant").info("%s", model.quant_report.line())
    return model.eval()


def _expert_stacks(model, scheme: str | None, place, dtype, fp8_block) -> None:
    """Empty stacks [E, out, in] for every MoE layer's experts, where the plan puts them: plain tensors,
    or PackedWeights that quantize each expert as it streams in."""
    import torch

    from ..models.llada2_moe import MoE
    from ..runtime.quant import PackedWeights

    for i, layer in enumerate(model.model.layers):
        if not isinstance(layer.mlp, MoE):
            continue
        for pname in ("gate_proj", "up_proj", "down_proj"):
            shape = layer.mlp._parameters.pop(pname).shape
            where = place(f"model.layers.{i}.mlp.{pname}")
            if scheme is None:
                empty = torch.empty(shape, device=where, dtype=dtype)
                layer.mlp._parameters[pname] = torch.nn.Parameter(empty, requires_grad=False)
            else:
                layer.mlp.add_module(pname, PackedWeights(scheme, shape, dtype, where, fp8_block))


def _fp8_part(name: str) -> tuple[str, str]:
    for suffix in FP8_SCALE_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix), "scale"
    return name, "weight"


def _expert_stack(model: Any, target: str) -> Any:
    owner, _, attr = target.rpartition(".")
    return getattr(model.get_submodule(owner), attr)  # a Parameter or a PackedWeights stack


def _put_experts(model: Any, target: str, expert: int | None, tensor: Any, dtype: Any) -> None:
    """One expert's matrix, or a whole stacked [E, out, in] tensor, into its stack."""
    stack = _expert_stack(model, target)
    for e, matrix in [(expert, tensor)] if expert is not None else enumerate(tensor):
        if hasattr(stack, "store"):
            stack.store(e, matrix)
        else:
            stack[e].copy_(matrix.to(dtype))


def _put_fp8(model: Any, base: str, parts: dict, scheme: str | None, block, dtype: Any) -> None:
    """An FP8 weight and its block scales (per expert or stacked): kept as FP8, or dequantized first."""
    target, expert = sanitize_key(base)
    weight, scale = parts["weight"], parts["scale"]
    stacked = zip(range(len(weight)), weight, scale, strict=True)
    items = [(expert, weight, scale)] if expert is not None else stacked
    for e, w, s in items:
        if scheme == "fp8":
            _expert_stack(model, target).store_fp8(e, w, s)
        else:
            _put_experts(model, target, e, dequantize_blocks(w, s, block), dtype)


def _expert_scheme(quant: str, fp8_checkpoint: bool, device: str) -> tuple[str | None, str]:
    """How the routed experts are held, and a note for the user when it differs from what was asked."""
    from ..limits import CHOICES
    from ..runtime.quant import fp8_supported, require_fp8

    if quant not in CHOICES["quant"]:
        raise UsageError(f"unknown quantization {quant!r}", f"use one of {', '.join(CHOICES['quant'])}")
    if quant in ("int8", "nf4"):
        return quant, ""
    if fp8_supported(device) and (quant == "fp8" or fp8_checkpoint):
        return "fp8", ""
    require_fp8(quant, device)  # asked for and impossible here: an error
    if fp8_checkpoint:
        return None, "FP8 experts are dequantised to full precision at load: this device has no FP8 support"
    return None, ""


def dequantize_blocks(weight: Any, scale_inv: Any, block: tuple[int, int]) -> Any:
    """Block FP8 -> float32: every (b0 x b1) block of e4m3 values times its inverse scale."""
    rows, cols = weight.shape
    scale = scale_inv.float().repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    return weight.float() * scale[:rows, :cols]


def load_decoder(
    root: Path,
    which: str = "decoder-turbo",
    device: str = "cpu",
    dtype: Any = None,
    cap_feat_dim: int | None = None,
    quant: str = "none",
):
    """diffusers' ZImageTransformer2DModel with the checkpoint's weights (caption width from SigVQ).

    With `quant` int8 / nf4 the transformer blocks' linears are packed as their weights stream in;
    `module.quant_report` says which."""
    import torch
    from diffusers import ZImageTransformer2DModel

    from ..limits import CHOICES
    from ..models.zimage import quant_predicate
    from ..runtime.quant import quantize_linears, report_for

    if quant not in CHOICES["decoder_quant"]:
        raise UsageError(
            f"unknown decoder quantization {quant!r}", f"use one of {', '.join(CHOICES['decoder_quant'])}"
        )

    cfg: DecoderConfig = read_config(root, which)
    if cap_feat_dim is not None:
        cfg = dataclasses.replace(cfg, cap_feat_dim=cap_feat_dim)
    with torch.device("meta"):
        module = ZImageTransformer2DModel(**cfg.diffusers_kwargs(cfg.cap_feat_dim))
    if quant != "none":
        quantize_linears(module, quant_predicate, quant, dtype or torch.bfloat16, device)
    info = inspect_component(root, which, cfg)
    _stream_into(module, info.files, device, dtype or torch.bfloat16, rename=to_diffusers_name)
    module.quant_report = report_for(module, which, quant)
    if quant != "none":
        import logging

        logging.getLogger("llada.quant").info("%s", module.quant_report.line())
    return module.eval()


def load_vae(root: Path, device: str = "cpu", dtype: Any = None):
    """diffusers' AutoencoderKL (FLUX.1 configuration) with the checkpoint's weights."""
    import torch

    raw = read_config(root, "vae")
    module = build_vae_on_meta(raw)
    info = inspect_component(root, "vae", raw)
    _stream_into(module, info.files, device, dtype or torch.bfloat16)
    return module.eval()


def load_image_tokenizer(root: Path, device: str = "cpu", precision: str = "bf16"):
    """The SigLIP-VQ encoder with its quantizer in `precision` (bf16, the official one, on every device;
    see siglip_vq.PRECISIONS); the checkpoint's unused post_quant_conv is skipped."""
    import torch

    from ..models.siglip_vq import PRECISIONS, SigLIPVQ

    cfg: ImageTokenizerConfig = read_config(root, "image_tokenizer")
    info = inspect_component(root, "image_tokenizer", cfg)
    with torch.device("meta"):
        module = SigLIPVQ(cfg)
    _stream_into(module, info.files, device, PRECISIONS[precision], skip=UNUSED_PREFIXES)
    return module.eval()


def load_sigvq(root: Path, device: str = "cpu", dtype: Any = None):
    """SigVQ from `sigvq_embedding.pt`, read with weights_only=True and checked against its manifest."""
    import torch

    from ..models.sigvq import SigVQ

    state = load_state(root, "sigvq", device, dtype or torch.bfloat16)
    with torch.device("meta"):
        module = SigVQ(SigVQConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()}))
    for name, tensor in state.items():
        _assign(module, name, tensor)
    _check_no_meta(module)
    return module.eval()


def _stream_into(module: Any, files: list[Path], device: str, dtype: Any, rename=None, skip=()) -> None:
    """Stream tensors from safetensors files into a meta-built module, one at a time, then check it is full."""
    for name, tensor in stream_tensors(files, device):
        if skip and name.startswith(tuple(skip)):
            continue
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        _assign(module, rename(name) if rename else name, tensor)
    _check_no_meta(module)
