"""SPRINT's settings: adaptive unmasking and the pruned prefix cache (the runner does the pruning)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class SprintSettings:
    """SPRINT, the lossy fast path. Unmasking: k = ceil(masked left / steps left) positions ranked by
    `confidence`, plus every one above the threshold. Pruning: after `warmup_steps` of a block, keep the
    most important prefix positions, importance = alpha * attention mass + (1 - alpha) * token confidence
    (each scaled to [0, 1])."""

    keep_ratio: float = 0.5
    image_keep_ratio: float | None = None  # image-code positions; None: keep_ratio
    text_keep_ratio: float | None = None  # text positions; None: keep_ratio
    confidence_alpha: float = 0.5
    warmup_steps: int = 1
    confidence: str = "low"  # low (p of the choice), margin (p1 - p2) or entropy (-sum p log p)

    def __post_init__(self) -> None:
        from ..limits import check

        for name in ("keep_ratio", "image_keep_ratio", "text_keep_ratio", "confidence_alpha"):
            if getattr(self, name) is not None:
                check(name, getattr(self, name))
        check("cache_warmup_steps", self.warmup_steps)
        check("confidence", self.confidence)
