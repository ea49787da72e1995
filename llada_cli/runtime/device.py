"""Choosing the device and compute dtype: CUDA in bf16 when there is a GPU, else CPU in fp32."""

from __future__ import annotations

from contextlib import contextmanager

from ..errors import OutOfMemory, UsageError

# What to try next when a stage runs out of memory, by the stage's first word.
OOM_HINTS = {
    "backbone": "try --quant nf4 (or int8), or --max-vram GB so the plan offloads; --dry-run shows the plan",
    "decoder": "try --decoder-quant nf4, --low-memory (the backbone is released first) or a smaller --size",
    "VAE": "try a smaller --size, or --low-memory",
    "image": "try fewer or smaller input images, or --low-memory (the image tokenizer is freed after use)",
}


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


@contextmanager
def memory_guard(stage: str):
    """Out of memory inside `stage` becomes one clear error that names the stage and the next setting."""
    import torch

    gpu_oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    where = error = None
    try:
        yield
    except gpu_oom as exc:
        where, error = "GPU", f"{type(exc).__name__}: {exc}"
    except MemoryError as exc:
        where, error = "host", f"{type(exc).__name__}: {exc}"
    if where is not None:  # outside the handler: the failed frames and their tensors are gone
        empty_cache()
        import logging

        logging.getLogger("llada").debug("%s", error)
        key = stage.split()[2] if stage.startswith("loading") else stage.split()[0]
        when = f"while {stage}" if stage.startswith("loading") else f"in the {stage} stage"
        raise OutOfMemory(f"out of {where} memory {when}", OOM_HINTS.get(key))


def gpus() -> tuple[str | None, list[dict]]:
    """CUDA version and each visible GPU with its free and total memory."""
    import torch

    if not torch.cuda.is_available():
        return torch.version.cuda, []
    found = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        props = torch.cuda.get_device_properties(i)
        found.append(
            {
                "index": i,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "free_bytes": free,
                "total_bytes": total,
            }
        )
    return torch.version.cuda, found
