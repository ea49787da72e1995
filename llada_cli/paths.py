"""Where llada keeps its own files (the built tiny checkpoints). Model weights live in the HF cache."""

from __future__ import annotations

import os
from pathlib import Path


def llada_home() -> Path:
    """`$LLADA_HOME`, else `$XDG_CACHE_HOME/llada`, else `~/.cache/llada`."""
    if env := os.environ.get("LLADA_HOME"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llada"


def tiny_root() -> Path:
    return llada_home() / "tiny"


def hf_hub_cache() -> Path:
    """The HF hub cache directory, honouring HF_HUB_CACHE and HF_HOME like every HF tool."""
    if env := os.environ.get("HF_HUB_CACHE"):
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
