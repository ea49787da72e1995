"""The sampler's settings, declared once: every task's settings nest a SamplerSettings.

The CLI builds one from its sampler flags (llada_cli/cli/options.py), records write it and read it back,
the server fills it from a request; each value passes the rule of its flag (llada_cli.limits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .sprint import SprintSettings


@dataclass(frozen=True, kw_only=True)
class SamplerSettings:
    """Block-wise masked diffusion: `steps` per block of `block_length`, every position above
    `threshold` accepted (at least the step's quota), tokens drawn at `temperature` (0: greedy) after the
    top-k / top-p / min-p filters; SPRINT when `sprint` is set."""

    steps: int = 32
    block_length: int = 32
    threshold: float = 0.95
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    # The last block's positions past prompt + gen_length (the padding up to a whole block): "denoise"
    # (the official rule) predicts and commits them like any other masked position, so they take part in
    # every step's quota and threshold and later steps see them, and the output is cut afterwards; "hold"
    # (llada before 0.2) keeps them masked and out of the race.
    tail: str = "denoise"
    sprint: SprintSettings | None = None
    # How a step sees the prefix: "exact" (lossless) keeps finished blocks in the KV cache; "recompute"
    # runs the whole canvas every step, as the reference sampler does (the benchmarks' baseline).
    prefix_cache: str = "exact"

    def __post_init__(self) -> None:
        from ..limits import check_flags

        check_flags({f.name: getattr(self, f.name) for f in fields(self)})

    def record(self) -> dict:
        """As generation records and `--json` carry it (SPRINT as its own object, or null)."""
        out = asdict(self)
        out.pop("prefix_cache")  # how it was computed, not what: never changes the result
        return out

    @classmethod
    def from_record(cls, record: dict, base: SamplerSettings | None = None) -> SamplerSettings:
        """The settings a record names, over `base` for what it does not (older records lack some)."""
        base = base or cls()
        known = {f.name for f in fields(cls)} - {"sprint", "prefix_cache"}
        changes = {k: v for k, v in record.items() if k in known and v is not None}
        sprint = record.get("sprint")
        if isinstance(sprint, dict):
            changes["sprint"] = SprintSettings(**sprint)
        return replace(base, **changes)
