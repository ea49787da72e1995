"""FLUX.1 VAE (`vae/`): diffusers' `AutoencoderKL`; its manifest is read off the module built on meta."""

from __future__ import annotations

from typing import Any

from .tensors import TensorSpec, TensorSpecs

WEIGHT_FILE_NAME = "diffusion_pytorch_model.safetensors"


def vae_init_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """Config keys diffusers' constructor takes; `_class_name` and friends are metadata."""
    import inspect

    from diffusers import AutoencoderKL

    accepted = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    return {k: v for k, v in raw.items() if k in accepted}


def build_vae_on_meta(raw: dict[str, Any]):
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL(**vae_init_kwargs(raw))


def vae_manifest(raw: dict[str, Any]) -> TensorSpecs:
    module = build_vae_on_meta(raw)
    return {name: TensorSpec(tuple(t.shape)) for name, t in module.state_dict().items()}
