"""One rule per setting: its type and range, or its set of values, the same wherever a value comes from.

A command-line flag, a field of a prompts or edits file line, a `--params-from` record and the REPL's
`/set` all go through `check`, so `--cfg nan`, `{"cfg": NaN}` and `/set temperature nan` are refused
alike, with the setting and the bad value named. The bounds keep every run inside what the model and
the machine can do (a 100000-token block would allocate gigabytes before failing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONTEXT = 8192  # the real model's max_position_embeddings: no prompt or answer is longer
MAX_SIDE = 4096  # pixels per image side
MAX_IMAGE_CODES = 4096  # codes per image (64 x 64, a 2048 x 2048 picture at 32 pixels per code)


@dataclass(frozen=True)
class Rule:
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low bound itself is not allowed

    def describe(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        if self.low is None:
            return kind
        left = "(" if self.low_open else "["
        if self.high is None:
            return f"{kind} >= {_num(self.low)}"
        return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}]"

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be {self.describe()}")
        if self.kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"must be {self.describe()}")
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"must be {self.describe()} (a finite one)")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if too_low or (self.high is not None and value > self.high):
            raise ValueError(f"must be {self.describe()}")
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


STEPS = Rule(int, 1, 1024)
SCALE = Rule(float, 0, 100)
RATIO = Rule(float, 0, 1, low_open=True)
LENGTH = Rule(int, 1, CONTEXT)
RULES: dict[str, Rule] = {
    "steps": STEPS,
    "image_steps": STEPS,
    "thinking_steps": STEPS,
    "cache_warmup_steps": STEPS,
    "block_length": Rule(int, 1, 1024),
    "threshold": Rule(float, 0, 1),
    "temperature": Rule(float, 0, 100),
    "top_k": Rule(int, 0, 1 << 20),
    "top_p": RATIO,
    "min_p": Rule(float, 0, 1),
    "seed": Rule(int, 0, (1 << 64) - 1),
    "cfg": SCALE,
    "cfg_text": SCALE,
    "cfg_image": SCALE,
    "max_tokens": LENGTH,
    "max_new_tokens": LENGTH,
    "thinking_length": LENGTH,
    "max_image_tokens": Rule(int, 1, MAX_IMAGE_CODES),
    "max_frames": Rule(int, 1, 100),
    "num_images": Rule(int, 1, 10_000),
    "width": Rule(int, 1, MAX_SIDE),
    "height": Rule(int, 1, MAX_SIDE),
    "decoder_steps": Rule(int, 2, 1000),
    "resolution_multiplier": Rule(int, 1, 4),
    "keep_ratio": RATIO,
    "image_keep_ratio": RATIO,
    "text_keep_ratio": RATIO,
    "confidence_alpha": Rule(float, 0, 1),
    "max_vram": Rule(float, 0, 100_000, low_open=True),
    "parallel": Rule(int, 1, 256),
    "max_queue": Rule(int, 0, 100_000),
    "port": Rule(int, 0, 65535),
    "timeout": Rule(float, 0, 7 * 86400, low_open=True),
    "max_body_mb": Rule(float, 0, 4096, low_open=True),
}


# Settings that take one of a fixed set of values (the CLI's choices are made from these).
CHOICES: dict[str, tuple] = {
    "quant": ("none", "int8", "nf4", "fp8"),
    "decoder_quant": ("none", "int8", "nf4"),
    "decoder": ("turbo", "normal"),
    "vq_precision": ("bf16", "fp32"),
    "alpha": ("drop", "white", "black"),
    "confidence": ("low", "margin", "entropy"),
    "tail": ("denoise", "hold"),
    "prefix_cache": ("exact", "recompute"),
    "budget": (512, 768, 1024),
    "layout": ("before", "after"),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check(name: str, value, where: str | None = None):
    """`value` if it obeys the rule for `name`, else a UsageError naming the setting and the value;
    `where` (e.g. "prompts.jsonl:3: cfg") replaces the flag name for values from files."""
    from .errors import UsageError

    if name in CHOICES:
        if value not in CHOICES[name]:
            allowed = ", ".join(map(str, CHOICES[name]))
            raise UsageError(f"{where or flag(name)} {value!r} is not one of {allowed}")
        return value
    try:
        return RULES[name].check(value)
    except ValueError as exc:
        raise UsageError(f"{where or flag(name)} {value!r} {exc}") from None


def check_flags(values: dict) -> None:
    """Every parameter of a command that has a rule (None: not given)."""
    for name, value in values.items():
        if (name in RULES or name in CHOICES) and value is not None:
            check(name, value)


def seed_or_drawn(seed: int | None) -> int:
    """The seed given, or a fresh 32-bit one (reported with the output, so the run can be repeated)."""
    import os

    return seed if seed is not None else int.from_bytes(os.urandom(4), "little")


def parse_size(size: str, what: str = "--size") -> tuple[int, int]:
    """`1024x768` -> (1024, 768); anything else is a UsageError naming `what`."""
    from .errors import UsageError

    try:
        w, h = (int(v) for v in str(size).lower().split("x"))
    except ValueError:
        raise UsageError(f"{what} {size!r} is not WIDTHxHEIGHT", f"e.g. {what} 1024x768") from None
    return w, h


PIXELS_PER_CODE = 16  # the image tokenizer's patch, before the decoder's resolution multiplier


def check_size(width: int, height: int, multiplier: int = 2, what: str = "size") -> tuple[int, int]:
    """(rows, columns) of codes for an output size: sides multiples of PIXELS_PER_CODE * multiplier, at most
    MAX_SIDE pixels, at most MAX_IMAGE_CODES codes; the error suggests the nearest size that works."""
    from .errors import UsageError

    step = PIXELS_PER_CODE * multiplier
    for name, value in (("width", width), ("height", height)):
        if value < step or value % step:
            near = min(MAX_SIDE // step * step, max(step, round(value / step) * step))
            raise UsageError(f"{name} {value} is not a positive multiple of {step}", f"try {name} {near}")
        if value > MAX_SIDE:
            raise UsageError(f"{what} {width}x{height}: {name} is over {MAX_SIDE} pixels", "try 1024x1024")
    rows, cols = height // step, width // step
    if rows * cols > MAX_IMAGE_CODES:
        raise UsageError(
            f"{what} {width}x{height} is {rows}x{cols} = {rows * cols} codes, more than {MAX_IMAGE_CODES}",
            "try 2048x2048 or smaller",
        )
    return rows, cols


def size_for_aspect(aspect: str, budget: int = 1024 * 1024, step: int = 32) -> tuple[int, int]:
    """`16:9` -> (width, height): multiples of `step` whose area is nearest the pixel budget."""
    from .errors import UsageError

    try:
        a, b = (float(x) for x in aspect.split(":"))
        if a <= 0 or b <= 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--aspect {aspect!r} is not W:H", "e.g. --aspect 16:9") from None
    height = math.sqrt(budget * b / a)
    w, h = max(step, round(height * a / b / step) * step), max(step, round(height / step) * step)
    return w, h
