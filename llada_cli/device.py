"""Choosing the device and compute dtype: CUDA in bf16 when there is a GPU, else CPU in fp32."""

from __future__ import annotations

from .errors import UsageError


def resolve_device(name: str = "auto") -> tuple[str, object]:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> (device, dtype); asking for a missing GPU is an error."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was asked for but no CUDA GPU is visible", "use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
        return name, torch.bfloat16
    if name != "cpu":
        raise UsageError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N")
    return "cpu", torch.float32


def empty_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory() -> dict:
    """Peak resident memory of this process and, on a GPU, peak allocated GPU memory, in bytes."""
    import resource
    import sys

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_bytes": rss if sys.platform == "darwin" else rss * 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return out
