"""Putting the backbone where the memory plan says: layers split over GPUs, experts kept in host RAM.

`layer_devices` has one entry per layer: a GPU ("cuda:1") runs that layer there; "cpu" keeps that layer's
routed experts (94% of its bytes) in host RAM while the rest of the layer runs on the main device, and each
forward moves only the experts it touched. The embedding computes with the first layer, the final norm and
LM head with the last layer (on the main device when that layer's experts stay on the host).
"""

from __future__ import annotations

import torch
from torch import nn

from .quant import PackedWeights


class HostExperts(nn.Module):
    """A layer's expert stack [E, out, in] in host RAM; indexing sends only those experts to `device`."""

    def __init__(self, source: torch.Tensor | PackedWeights, device: str):
        super().__init__()
        self.device, self.shape = torch.device(device), source.shape
        if isinstance(source, PackedWeights):
            self.packed = source
        else:
            pin = self.device.type == "cuda" and torch.cuda.is_available()
            self.register_buffer("weights", source.pin_memory() if pin else source)

    def __getitem__(self, index) -> torch.Tensor:
        if hasattr(self, "packed"):
            return self.packed.take(index, self.device)
        if not isinstance(index, int):
            index = index.cpu()
        return self.weights[index].to(self.device, non_blocking=True)


def compute_devices(layer_devices: list[str], main: str) -> list[str]:
    """Where each layer computes: its GPU, or the main device for layers whose experts stay on the host."""
    return [main if d == "cpu" else d for d in layer_devices]


def tensor_device(name: str, layer_devices: list[str], main: str) -> str:
    """Where one checkpoint tensor (our parameter name) is stored under the plan."""
    compute = compute_devices(layer_devices, main)
    if name.startswith("model.layers."):
        i = int(name.split(".")[2])
        is_expert = ".mlp." in name and name.rsplit(".", 1)[-1] in ("gate_proj", "up_proj", "down_proj")
        return "cpu" if is_expert and layer_devices[i] == "cpu" else compute[i]
    return compute[0] if name.startswith("model.word_embeddings") else compute[-1]


def host_experts(model: nn.Module, layer_devices: list[str], main: str) -> int:
    """Wrap the experts of every "cpu" layer so they stream to the main device; returns how many layers."""
    from ..models.llada2_moe import MoE

    count = 0
    for layer, where in zip(model.model.layers, layer_devices, strict=True):
        if where == "cpu" and isinstance(layer.mlp, MoE):
            for name in ("gate_proj", "up_proj", "down_proj"):
                source = layer.mlp._parameters.pop(name, None)
                source = source.data if source is not None else layer.mlp._modules.pop(name)
                layer.mlp.add_module(name, HostExperts(source, main))
            count += 1
    return count
