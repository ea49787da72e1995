"""Weight-only quantization applied while a checkpoint streams in: the model code never sees it.

Routed experts (94% of the backbone's bytes) are held as `PackedWeights`, a stack [E, out, in] kept in
int8 (row-wise absmax, bitsandbytes), nf4 (64-element blocks, bitsandbytes) or block FP8 (the FP8
checkpoint's own e4m3 values and 128x128 inverse scales). Indexing a stack dequantizes only the experts
asked for, so the MoE computes on the touched experts exactly as it does with plain tensors. The
decoder's linears become `QuantLinear`, one packed matrix each. Everything else keeps its reference
precision: router, norms, embeddings, attention, dense and shared MLPs, LM head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .schemes import NF4_BLOCK

FP8_MAX = 448.0  # largest finite float8_e4m3fn
# Keeping FP8 experts in FP8 needs an FP8 GPU (compute capability 8.9+: Ada, Hopper, Blackwell); elsewhere
# they are dequantised at load. "auto" follows the device; "always"/"never" force it (tests, debugging).
FP8_KEEP = "auto"


def fp8_supported(device: str) -> bool:
    if FP8_KEEP != "auto":
        return FP8_KEEP == "always"
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def require_fp8(quant: str, device: str) -> None:
    """`--quant fp8` where the device cannot keep FP8 is a usage error, never a silent bf16 load."""
    if quant == "fp8" and not fp8_supported(device):
        from ..errors import UsageError

        raise UsageError(
            "--quant fp8 needs a GPU with FP8 support (compute capability 8.9+)",
            "use --quant int8 or nf4; an FP8 checkpoint also loads with --quant none (dequantized)",
        )


def _nf4():
    import bitsandbytes.functional as bnbf

    return bnbf


class PackedWeights(nn.Module):
    """E quantized matrices [out, in]; `stack[i]` or `stack[tensor_of_ids]` gives them back in `dtype`."""

    def __init__(self, scheme: str, shape, dtype, device, fp8_block=(128, 128)):
        super().__init__()
        e, out, inp = shape
        self.scheme, self.shape, self.dtype, self.block = scheme, torch.Size(shape), dtype, tuple(fp8_block)
        if scheme == "int8":
            self.register_buffer("q", torch.empty(e, out, inp, dtype=torch.int8, device=device))
            self.register_buffer("scale", torch.empty(e, out, dtype=torch.float32, device=device))
        elif scheme == "nf4":
            if (out * inp) % NF4_BLOCK:
                raise ValueError(f"nf4 needs a multiple of {NF4_BLOCK} elements per matrix")
            self.register_buffer("q", torch.empty(e, out * inp // 2, dtype=torch.uint8, device=device))
            self.register_buffer("scale", torch.empty(e, out * inp // NF4_BLOCK, device=device))
        elif scheme == "fp8":
            b0, b1 = self.block
            self.register_buffer("q", torch.empty(e, out, inp, dtype=torch.float8_e4m3fn, device=device))
            grid = (e, math.ceil(out / b0), math.ceil(inp / b1))
            self.register_buffer("scale", torch.empty(grid, dtype=torch.float32, device=device))
        else:
            raise ValueError(f"unknown quantization {scheme!r}")
        self.filled = torch.zeros(e, dtype=torch.bool)  # strict loading: every matrix must arrive

    def store(self, index: int, weight: torch.Tensor) -> None:
        """Quantize one full-precision matrix [out, in] into slot `index`."""
        w = weight.to(self.q.device)
        if self.scheme == "int8":
            import bitsandbytes.functional as bnbf

            q, row_absmax, _ = bnbf.int8_vectorwise_quant(w.to(torch.float16 if w.is_cuda else w.dtype))
            self.q[index], self.scale[index] = q, row_absmax.float()
        elif self.scheme == "nf4":
            # rows of exactly one block: bitsandbytes >= 0.49 on the CPU mis-blocks rows of other lengths
            blocks = w.contiguous().view(-1, NF4_BLOCK)
            packed, state = _nf4().quantize_4bit(blocks, blocksize=NF4_BLOCK, quant_type="nf4")
            self.q[index], self.scale[index] = packed.flatten(), state.absmax.float()
        else:
            self.store_fp8(index, *quantize_fp8_blocks(w, self.block))
        self.filled[index] = True

    def store_fp8(self, index: int, weight_e4m3: torch.Tensor, scale_inv: torch.Tensor) -> None:
        """An FP8 checkpoint's matrix and its block inverse scales, kept as they are."""
        self.q[index], self.scale[index] = weight_e4m3.to(self.q.device), scale_inv.float().to(self.q.device)
        self.filled[index] = True

    def __getitem__(self, index) -> torch.Tensor:
        return self.take(index, self.q.device)

    def forward(self, index) -> torch.Tensor:
        """`stack(i)`: the same as `stack[i]`, through forward so accelerate's offload hooks see it."""
        return self.take(index, self.q.device)

    def take(self, index, device) -> torch.Tensor:
        """The matrices at `index`, dequantized on `device` (packed bytes cross, not full precision)."""
        one = isinstance(index, int)
        if not one:
            index = index.to(self.q.device)
        q = self.q[index].to(device, non_blocking=True)
        scale = self.scale[index].to(device, non_blocking=True)
        _, out, inp = self.shape
        dtype = self.dtype  # straight to the compute dtype: no fp32 copy of every touched expert
        if self.scheme == "int8":
            w = q.to(dtype) * (scale[..., None] / 127.0).to(dtype)
        elif self.scheme == "nf4":
            bnbf = _nf4()
            k = 1 if one else q.shape[0]
            state = bnbf.QuantState(
                absmax=scale.reshape(-1),
                shape=torch.Size((k * out * inp // NF4_BLOCK, NF4_BLOCK)),
                code=bnbf.get_4bit_type("nf4", device=q.device),
                blocksize=NF4_BLOCK,
                quant_type="nf4",
                dtype=dtype,
            )
            w = bnbf.dequantize_4bit(q.reshape(-1, 1), state).view(k, out, inp)
            w = w[0] if one else w
        else:
            b0, b1 = self.block
            s = scale.repeat_interleave(b0, -2).repeat_interleave(b1, -1)[..., :out, :inp]
            w = q.to(dtype) * s.to(dtype)
        return w

    def missing(self) -> list[int]:
        return (~self.filled).nonzero().flatten().tolist()

    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes


def quantize_fp8_blocks(weight: torch.Tensor, block=(128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] -> (e4m3 values, fp32 inverse scale per block): value * scale_inv ~ weight."""
    out, inp = weight.shape
    b0, b1 = block
    padded = F.pad(weight.float(), (0, -inp % b1, 0, -out % b0))
    blocks = padded.view(padded.shape[0] // b0, b0, padded.shape[1] // b1, b1)
    scale_inv = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / FP8_MAX
    q = (blocks / scale_inv[:, None, :, None]).view_as(padded)[:out, :inp]
    return q.to(torch.float8_e4m3fn), scale_inv


class QuantLinear(nn.Module):
    """nn.Linear with a packed weight; the weight is dequantized on each call (the decoder is compute-bound,
    so this costs little next to the matmul, and halves or quarters the resident bytes)."""

    def __init__(self, linear: nn.Linear, scheme: str, dtype, device):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = PackedWeights(scheme, (1, linear.out_features, linear.in_features), dtype, device)
        self.bias = linear.bias  # assigned by the loader like any other parameter

    def store_weight(self, weight: torch.Tensor) -> None:
        self.packed.store(0, weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.packed(0).to(x.dtype), self.bias)


def quantize_linears(module: nn.Module, should, scheme: str, dtype, device) -> list[str]:
    """Swap every nn.Linear whose weight name passes `should(name, shape)` for a QuantLinear (before the
    weights load, on a meta-built module). Returns the swapped weight names."""
    swapped = []
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear) and should(f"{name}.weight", tuple(child.weight.shape)):
            if (child.in_features * child.out_features) % NF4_BLOCK and scheme == "nf4":
                continue  # too small to pack in 64-element blocks: stays in full precision
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, QuantLinear(child, scheme, dtype, device))
            swapped.append(f"{name}.weight")
    return swapped


@dataclass
class QuantReport:
    """What loading did to a component: which tensors were packed and what the weights weigh now."""

    component: str
    scheme: str
    quantized: list[str] = field(default_factory=list)
    quantized_params: int = 0
    kept_tensors: int = 0
    kept_params: int = 0
    bytes: int = 0
    note: str = ""

    def line(self) -> str:
        size = _human(self.bytes, "B")
        if self.scheme == "none" or not self.quantized:
            return f"{self.component}: {self.kept_tensors} tensors in full precision, {size}"
        return (
            f"{self.component}: {len(self.quantized)} tensors ({_human(self.quantized_params)} params) in "
            f"{self.scheme}; {self.kept_tensors} tensors ({_human(self.kept_params)} params) kept in full "
            f"precision; weights {size}{f' ({self.note})' if self.note else ''}"
        )

    def record(self) -> dict:
        return {
            "component": self.component,
            "scheme": self.scheme,
            "quantized_tensors": len(self.quantized),
            "quantized_params": self.quantized_params,
            "kept_tensors": self.kept_tensors,
            "kept_params": self.kept_params,
            "bytes": self.bytes,
            "note": self.note,
        }


def _human(n: float, unit: str = "") -> str:
    for scale, prefix in ((1e9, "G" if unit else "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def report_for(module: nn.Module, component: str, scheme: str, note: str = "") -> QuantReport:
    """Count packed and plain tensors of a loaded module."""
    rep = QuantReport(component, scheme, note=note)
    packed_names = set()
    for name, sub in module.named_modules():
        if isinstance(sub, PackedWeights):
            rep.quantized.append(name)
            rep.quantized_params += sub.shape.numel()
            rep.bytes += sub.nbytes()
            packed_names.update(f"{name}.{b}" if name else b for b, _ in sub.named_buffers())
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        if name not in packed_names:
            rep.kept_tensors += 1
            rep.kept_params += t.numel()
            rep.bytes += t.nbytes
    return rep
