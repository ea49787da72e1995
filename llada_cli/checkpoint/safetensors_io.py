"""Reading safetensors headers ourselves (cheap, strict) and streaming tensors one at a time.

The header check catches truncated downloads and bad headers with a message naming the file, before any
tensor is read. Streaming goes through `safetensors.safe_open`, one tensor at a time, so no second full
copy of a component ever sits in host memory.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from ..errors import CorruptFile
from .verify import FoundTensor

_MAX_HEADER = 100 * 1024 * 1024
_HINT = "the file is damaged or partly downloaded; re-run `llada download MODEL`"


def read_header(path: Path) -> dict[str, FoundTensor]:
    """Parse one file's header and check that its data section is complete."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CorruptFile(f"{path} is not a safetensors file ({size} bytes)", _HINT)
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _MAX_HEADER or 8 + header_len > size:
            raise CorruptFile(
                f"{path} has a damaged safetensors header (truncated or not safetensors)", _HINT
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFile(f"{path} has an unreadable safetensors header: {exc}", _HINT) from None
    if not isinstance(header, dict):
        raise CorruptFile(f"{path} has a malformed safetensors header", _HINT)
    header.pop("__metadata__", None)
    end = 0
    found: dict[str, FoundTensor] = {}
    try:
        for name, info in header.items():
            start, stop = info["data_offsets"]
            end = max(end, stop)
            found[name] = FoundTensor(tuple(info["shape"]), info["dtype"], path.name)
    except (KeyError, TypeError, ValueError):
        raise CorruptFile(f"{path} has a malformed safetensors header entry", _HINT) from None
    if 8 + header_len + end != size:
        raise CorruptFile(
            f"{path} is truncated or padded: header promises {8 + header_len + end} bytes, file has {size}",
            _HINT,
        )
    return found


def read_headers(files: list[Path]) -> dict[str, FoundTensor]:
    """Headers of several shards; a tensor stored twice is an error."""
    found: dict[str, FoundTensor] = {}
    for path in files:
        for name, tensor in read_header(path).items():
            if name in found:
                raise CorruptFile(
                    f"tensor {name} is stored in both {found[name].file} and {path.name}", _HINT
                )
            found[name] = tensor
    return found


def stream_tensors(files: list[Path], device: str = "cpu") -> Iterator[tuple[str, object]]:
    """Yield (name, tensor) for every tensor of the given files, one at a time.

    Each tensor owns its memory. Views into a memory-mapped file would keep every shard's pages mapped
    (and counted in RSS) as long as one kept tensor lives, so a quantized load would hold the whole
    bf16 checkpoint in page cache next to the packed model. safetensors >= 0.8 reads with `pread`;
    older versions map the file and each tensor is copied out of the mapping."""
    from safetensors import safe_open

    for path in files:
        try:
            handle = safe_open(str(path), framework="pt", device=device, backend="pread")
            copy = False
        except TypeError:  # safetensors < 0.8 has only the mmap backend
            handle, copy = safe_open(str(path), framework="pt", device=device), True
        with handle as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                yield name, tensor.clone() if copy and tensor.device.type == "cpu" else tensor
