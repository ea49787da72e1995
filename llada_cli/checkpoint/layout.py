"""The repo layout: which files make up each component, how to fetch them, and whether they are all here.

Used three ways: `allow_patterns` for downloads (a command fetches only what it runs), the completeness
check after resolution (a missing shard or config is an IncompleteCheckpoint naming the file), and the
list of weight files the strict loader reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptFile, IncompleteCheckpoint

INDEX_SUFFIX = ".safetensors.index.json"


@dataclass(frozen=True)
class Component:
    name: str
    folder: str  # relative to the repo root, "" for the root
    patterns: tuple[str, ...]  # huggingface_hub allow_patterns
    configs: tuple[str, ...]  # files that must exist, relative to the folder
    weights: tuple[str, ...]  # candidate weight files (first found wins); "*" globs; index files expand

    def path(self, root: Path, name: str) -> Path:
        return Path(root) / self.folder / name


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "backbone",
            "",
            ("config.json", "generation_config.json", "model.safetensors.index.json", "model-*.safetensors"),
            ("config.json",),
            ("model.safetensors.index.json", "model.safetensors"),
        ),
        Component(
            "tokenizer",
            "",
            ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
            ("tokenizer.json",),
            (),
        ),
        Component(
            "image_tokenizer",
            "image_tokenizer",
            ("image_tokenizer/*.json", "image_tokenizer/*.safetensors"),
            ("config.json", "preprocessor_config.json"),
            ("model.safetensors.index.json", "*.safetensors"),
        ),
        Component(
            "sigvq",
            "image_tokenizer",
            ("image_tokenizer/sigvq_embedding.pt",),
            (),
            ("sigvq_embedding.pt",),
        ),
        Component(
            "decoder",
            "decoder",
            ("decoder/*.json", "decoder/*.safetensors"),
            ("config.json",),
            ("model.safetensors.index.json", "model.safetensors", "decoder_model.safetensors"),
        ),
        Component(
            "decoder-turbo",
            "decoder-turbo",
            ("decoder-turbo/*.json", "decoder-turbo/*.safetensors"),
            ("config.json",),
            ("model.safetensors.index.json", "model.safetensors", "decoder_model.safetensors"),
        ),
        Component(
            "vae",
            "vae",
            ("vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
            ("config.json",),
            ("diffusion_pytorch_model.safetensors",),
        ),
    )
}

DECODERS = {"turbo": "decoder-turbo", "normal": "decoder"}


def components_for(command: str, decoder: str = "turbo") -> tuple[str, ...]:
    """What each command runs, so a download fetches that and never both decoders."""
    dec = DECODERS[decoder]
    table = {
        "chat": ("backbone", "tokenizer", "image_tokenizer"),
        "generate": ("backbone", "tokenizer", "sigvq", dec, "vae"),
        "edit": ("backbone", "tokenizer", "image_tokenizer", "sigvq", dec, "vae"),
        "interleave": ("backbone", "tokenizer", "image_tokenizer", "sigvq", dec, "vae"),
        "all": tuple(COMPONENTS),
    }
    return table[command]


def allow_patterns(components: tuple[str, ...] | list[str]) -> list[str]:
    """Download patterns for these components; never code files (`*.py` is not in any pattern)."""
    out: list[str] = []
    for name in components:
        out.extend(p for p in COMPONENTS[name].patterns if p not in out)
    return out


def _read_index(path: Path, component: str) -> list[Path]:
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CorruptFile(
            f"{path} is not a valid safetensors index", "re-run `llada download MODEL`"
        ) from None
    files = [path.parent / s for s in shards]
    for f in files:
        if not f.is_file():
            raise IncompleteCheckpoint(component, str(f))
    return files


def weight_files(root: Path, name: str) -> list[Path]:
    """The weight files of a component, in order; raises IncompleteCheckpoint naming what is missing."""
    comp = COMPONENTS[name]
    folder = Path(root) / comp.folder
    for candidate in comp.weights:
        if candidate.endswith(INDEX_SUFFIX) and (folder / candidate).is_file():
            return _read_index(folder / candidate, name)
        if candidate.startswith("*"):
            found = sorted(folder.glob(candidate)) if folder.is_dir() else []
            if found:
                return found
        elif (folder / candidate).is_file():
            return [folder / candidate]
    return _missing(root, comp)


def _missing(root: Path, comp: Component) -> list[Path]:
    """Name the file a user would look for: the plain weight file rather than an optional index."""
    if not comp.weights:
        return []
    plain = [w for w in comp.weights if not w.endswith(INDEX_SUFFIX)] or list(comp.weights)
    if comp.name == "backbone":
        plain = ["model.safetensors.index.json"]
    raise IncompleteCheckpoint(comp.name, str(comp.path(root, plain[0])))


def check_component(root: Path, name: str) -> list[Path]:
    """Every config file present and every weight file (all index shards) present; returns the weights."""
    comp = COMPONENTS[name]
    for cfg in comp.configs:
        if not comp.path(root, cfg).is_file():
            raise IncompleteCheckpoint(name, str(comp.path(root, cfg)))
    return weight_files(root, name)


def check_complete(root: Path, components: tuple[str, ...] | list[str]) -> None:
    for name in components:
        check_component(root, name)
