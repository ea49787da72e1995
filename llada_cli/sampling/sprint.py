"""SPRINT's settings: adaptive unmasking and the pruned prefix cache (the runner does the pruning)."""

from __future__ import annotations

from dataclasses import dataclass

CONFIDENCE_SCORES = ("low", "margin", "entropy")


@dataclass(frozen=True)
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
        for name in ("keep_ratio", "image_keep_ratio", "text_keep_ratio", "confidence_alpha"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.warmup_steps < 1:
            raise ValueError("warmup_steps must be at least 1")
        if self.confidence not in CONFIDENCE_SCORES:
            raise ValueError(f"confidence must be one of {', '.join(CONFIDENCE_SCORES)}")
