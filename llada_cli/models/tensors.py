"""Expected tensors of a component: name -> shape and allowed dtypes, built from its config.

A component's TensorSpecs are what strict loading checks its files against, and what the tiny builder
writes, so the two can never drift apart. Dtypes are safetensors' names (BF16, F32, F8_E4M3) so no torch
import is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


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


TensorSpecs = dict[str, TensorSpec]


def param_count(specs: Mapping[str, TensorSpec]) -> int:
    return sum(spec.numel for spec in specs.values())
