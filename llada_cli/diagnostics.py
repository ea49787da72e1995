"""What `llada doctor` reports: versions, GPUs, caches, and the health of a model's components."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import __version__
from .checkpoint.layout import COMPONENTS
from .errors import LladaError
from .paths import hf_hub_cache, hf_offline, llada_home

PACKAGES = (
    "torch",
    "diffusers",
    "bitsandbytes",
    "accelerate",
    "huggingface-hub",
    "safetensors",
    "tokenizers",
    "typer",
    "rich",
    "pillow",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions read from metadata; nothing is imported (bitsandbytes prints on import)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def system_report() -> dict:
    from .runtime.device import gpus

    cuda, devices = gpus()
    return {
        "llada": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "cuda": cuda,
        "gpus": devices,
        "hf_hub_cache": str(hf_hub_cache()),
        "llada_home": str(llada_home()),
        "hf_hub_offline": hf_offline(),
    }


@dataclass
class ComponentStatus:
    component: str
    ok: bool
    detail: str
    tensors: int = 0
    params: int = 0
    bytes: int = 0


@dataclass
class ModelReport:
    model: str
    path: str | None
    components: list[ComponentStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.components) and all(c.ok for c in self.components)

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "path": self.path,
            "ok": self.ok,
            "components": [asdict(c) for c in self.components],
        }


def model_report(model: str) -> ModelReport:
    """Check every component of a model that is on disk, without downloading anything."""
    from .checkpoint.components import inspect_component
    from .hub.resolve import _snapshot, parse_model_ref

    ref = parse_model_ref(model)
    names = tuple(COMPONENTS)
    if ref.repo_id:
        try:
            root = _snapshot(ref, names, local_only=True)
        except LladaError as exc:
            return ModelReport(ref.label, None, [ComponentStatus(n, False, exc.message) for n in names])
    else:
        from .hub.resolve import resolve

        root = resolve(ref, ()) if ref.tiny else ref.path
    report = ModelReport(ref.label, str(root))
    for name in names:
        try:
            info = inspect_component(Path(root), name)
        except LladaError as exc:
            report.components.append(ComponentStatus(name, False, exc.message))
        else:
            detail = (
                info.detail or f"{len(info.files)} file(s), {info.tensors} tensors, {info.params:,} params"
            )
            report.components.append(
                ComponentStatus(name, True, detail, info.tensors, info.params, info.bytes)
            )
    return report
