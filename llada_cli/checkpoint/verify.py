"""Checking a component's files against its TensorSpecs (llada_cli/models/tensors.py) before loading."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import CheckpointMismatch
from ..models.tensors import TensorSpec


@dataclass(frozen=True)
class FoundTensor:
    """A tensor as a file header describes it."""

    shape: tuple[int, ...]
    dtype: str
    file: str


def _preview(names: Iterable[str], limit: int = 3) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def check_against(
    component: str,
    found: Mapping[str, FoundTensor],
    specs: Mapping[str, TensorSpec],
    allowed_extra: Iterable[str] = (),
) -> None:
    """Raise CheckpointMismatch naming the first problems: missing, unexpected, mis-shaped, wrong dtype."""
    extra_ok = set(allowed_extra)
    missing = [k for k in specs if k not in found]
    unexpected = [k for k in found if k not in specs and k not in extra_ok]
    problems: list[str] = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_preview(missing)}")
    if unexpected:
        files = sorted({found[k].file for k in unexpected})
        problems.append(
            f"{len(unexpected)} unexpected tensor(s): {_preview(unexpected)} in {', '.join(files)}"
        )
    for name, spec in specs.items():
        got = found.get(name)
        if got is None:
            continue
        if tuple(got.shape) != spec.shape:
            problems.append(f"{name} in {got.file} has shape {list(got.shape)}, expected {list(spec.shape)}")
        elif got.dtype not in spec.dtypes:
            problems.append(f"{name} in {got.file} has dtype {got.dtype}, expected {'/'.join(spec.dtypes)}")
        if len(problems) >= 5:
            break
    if problems:
        raise CheckpointMismatch(
            f"{component} weights do not match its config: " + "; ".join(problems),
            hint="the download may be damaged or from another model; re-run `llada download MODEL`",
        )
