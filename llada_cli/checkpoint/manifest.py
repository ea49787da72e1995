"""Expected tensors of a component: name -> shape and allowed dtypes, built from its config.

A manifest is what strict loading checks the files against, and what the tiny builder writes, so the two
can never drift apart. Dtypes are safetensors' names (BF16, F32, F8_E4M3) so no torch import is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import CheckpointMismatch


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtypes: tuple[str, ...] = ("BF16",)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> str:
        """The dtype the tiny builder writes: the first allowed one."""
        return self.dtypes[0]


Manifest = dict[str, TensorSpec]


def param_count(manifest: Mapping[str, TensorSpec]) -> int:
    return sum(spec.numel for spec in manifest.values())


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
    manifest: Mapping[str, TensorSpec],
    allowed_extra: Iterable[str] = (),
) -> None:
    """Raise CheckpointMismatch naming the first problems: missing, unexpected, mis-shaped, wrong dtype."""
    extra_ok = set(allowed_extra)
    missing = [k for k in manifest if k not in found]
    unexpected = [k for k in found if k not in manifest and k not in extra_ok]
    problems: list[str] = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_preview(missing)}")
    if unexpected:
        files = sorted({found[k].file for k in unexpected})
        problems.append(
            f"{len(unexpected)} unexpected tensor(s): {_preview(unexpected)} in {', '.join(files)}"
        )
    for name, spec in manifest.items():
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
