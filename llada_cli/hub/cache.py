"""What is on disk: Hub models in the HF cache and the tiny checkpoints llada built."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..paths import hf_hub_cache, tiny_root
from ..weights.registry import KNOWN_CHECKPOINTS


@dataclass
class CachedModel:
    name: str
    source: str  # "hub" or "tiny"
    size_bytes: int
    revisions: list[str]
    path: str
    known: bool


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def cached_models() -> list[CachedModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    found: list[CachedModel] = []
    try:
        info = scan_cache_dir(hf_hub_cache())
    except CacheNotFound:
        info = None
    for repo in sorted(info.repos if info else [], key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        found.append(
            CachedModel(
                repo.repo_id,
                "hub",
                repo.size_on_disk,
                sorted(r.commit_hash[:12] for r in repo.revisions),
                str(repo.repo_path),
                repo.repo_id in KNOWN_CHECKPOINTS,
            )
        )
    root = tiny_root()
    for marker in sorted(root.glob("*/.llada-tiny.json")) if root.is_dir() else []:
        meta = json.loads(marker.read_text())
        name = "tiny" if meta.get("variant") == "bf16" else "tiny-" + meta.get("variant", "?")
        found.append(
            CachedModel(
                name, "tiny", _folder_size(marker.parent), [marker.parent.name], str(marker.parent), True
            )
        )
    return found
