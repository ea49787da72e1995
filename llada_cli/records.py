"""What made an image, as one typed record: written into the image file, its `.codes.json`, JSON lines and
documents, and read back by `--params-from`, `llada decode` and `--resume`.

The JSON layout is the one llada has always written (`prompt`, `seed`, `grid`, a flat `settings` object
...), so files from earlier versions read back; `from_json` checks every field it reuses by its flag's
rule (llada_cli.limits) and names the one that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import __version__
from .errors import UsageError
from .limits import PIXELS_PER_CODE
from .sampling.settings import SamplerSettings
from .settings import DecoderSettings, EditSettings, ImageSettings, InterleaveSettings, RunOptions


def image_settings_record(s: ImageSettings) -> dict:
    return {**s.sampler.record(), "cfg": s.cfg, "thinking": s.thinking}


def edit_settings_record(s: EditSettings) -> dict:
    return {
        **s.sampler.record(),
        "cfg": None,
        "cfg_text": s.cfg_text,
        "cfg_image": s.cfg_image,
        "budget": s.budget,
        "fit": s.fit,
        "reference_layout": s.layout,
    }


def interleave_settings_record(s: InterleaveSettings) -> dict:
    out = {k: getattr(s, k) for k in ("max_frames", "max_new_tokens", "cfg", "cfg_text", "cfg_image")}
    return out | {
        "max_image_tokens": s.max_image_tokens,
        "system": s.system,
        "text": s.text_sampler.record(),
        "image": s.image_sampler.record(),
    }


def decoder_record(d: DecoderSettings) -> dict:
    return {
        "decoder": d.mode,
        "decoder_steps": d.resolved_steps,
        "resolution_multiplier": d.resolution_multiplier,
    }


def run_record(options: RunOptions) -> dict:
    return {"quant": options.quant, "decoder_quant": options.decoder_quant}


@dataclass(frozen=True, kw_only=True)
class GenerationRecord:
    """One image: text-to-image (`prompt`), an edit (`instruction` and source `images`) or a document's
    frame (`frame`, `guidance`)."""

    llada: str = __version__
    model: str
    revision: str | None = None
    prompt: str
    seed: int
    width: int
    height: int
    grid: tuple[int, int]
    settings: dict[str, Any] = field(default_factory=dict)
    thinking: str | None = None
    instruction: str | None = None
    images: list[dict] | None = None
    frame: int | None = None
    guidance: str | None = None
    codes_file: str | None = None

    OPTIONAL = ("thinking", "instruction", "images", "frame", "guidance", "codes_file")

    def to_json(self) -> dict:
        """The dict written to files; optional fields appear only when set (`thinking` always, as it did)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["grid"] = list(self.grid)
        for name in self.OPTIONAL:
            if out[name] is None and name != "thinking":
                del out[name]
        return out

    def with_(self, **changes) -> GenerationRecord:
        return replace(self, **changes)

    @classmethod
    def from_json(cls, raw: Any, where: str, partial: bool = False) -> GenerationRecord:
        """A record read from a file; a malformed field is a UsageError naming it. `partial` accepts
        a record without prompt, model or seed (a bare codes file: grid and codes are enough to decode)."""
        from .limits import check

        if not isinstance(raw, dict):
            raise UsageError(f"{where}: the record is not a JSON object")
        settings = raw.get("settings", {})
        if not isinstance(settings, dict):
            raise UsageError(f"{where}: settings is not an object")
        for key in ("steps", "cfg", "cfg_text", "cfg_image", "decoder_steps", "block_length", "threshold"):
            value = settings.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{where} settings.{key} is {value!r}, not a number")
            check(key, value, f"{where} settings.{key}")  # every key has its rule
        if settings.get("decoder") not in (None, "turbo", "normal"):
            raise UsageError(f"{where} settings.decoder is {settings['decoder']!r}, not turbo or normal")
        if not isinstance(settings.get("thinking", False), bool):
            raise UsageError(f"{where} settings.thinking is {settings['thinking']!r}, not true or false")
        defaults = {"prompt": "", "model": "", "seed": 0} if partial else {}
        for name, kind in (("prompt", str), ("model", str), ("seed", int)):
            value = raw.get(name, defaults.get(name))
            if not isinstance(value, kind) or isinstance(value, bool):
                raise UsageError(f"{where} {name} is {value!r}, not {kind.__name__}")
        check("seed", raw.get("seed", 0), f"{where} seed")
        px = PIXELS_PER_CODE * int(settings.get("resolution_multiplier") or 2)
        grid = raw.get("grid")
        if grid is None and isinstance(raw.get("width"), int) and isinstance(raw.get("height"), int):
            grid = [raw["height"] // px, raw["width"] // px]
        if not (isinstance(grid, list) and len(grid) == 2 and all(type(v) is int and v > 0 for v in grid)):
            raise UsageError(f"{where} grid is {grid!r}, not [rows, columns] of positive integers")
        known = {f.name for f in fields(cls)} - {"grid", "settings", "width", "height"}
        return cls(
            **(defaults | {k: raw[k] for k in known if k in raw and raw[k] is not None}),
            grid=(grid[0], grid[1]),
            settings=dict(settings),
            width=raw.get("width") or grid[1] * px,
            height=raw.get("height") or grid[0] * px,
        )

    def image_settings(self, base: ImageSettings) -> ImageSettings:
        """The text-to-image settings this record names, over `base` (flags given win; see the CLI)."""
        s = self.settings
        sampler = SamplerSettings.from_record(s, base.sampler)
        changes = {k: s[k] for k in ("cfg", "thinking") if s.get(k) is not None}
        return replace(base, sampler=sampler, **changes)

    def decoder_settings(self, base: DecoderSettings | None = None) -> DecoderSettings:
        s, base = self.settings, base or DecoderSettings()
        mode = s.get("decoder") or base.mode
        steps = s.get("decoder_steps") if mode == s.get("decoder") else None
        rm = s.get("resolution_multiplier") or base.resolution_multiplier
        return DecoderSettings(mode=mode, steps=steps, resolution_multiplier=rm)
