"""Every setting of a run, declared once, as frozen keyword-only dataclasses.

Each task's settings nest the sampler's (`SamplerSettings`, llada_cli/sampling/settings.py), so
temperature, top-k, top-p, min-p and SPRINT mean the same on every command; `DecoderSettings` is the
decoder stack's and `RunOptions` how the engine loads. Values pass their flag's rule (llada_cli.limits)
when a dataclass is made, wherever they come from: flags, prompt files, records, the REPL, a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .inputs.prompts import SYS_UNDERSTAND
from .limits import PIXELS_PER_CODE
from .sampling.settings import SamplerSettings

# How several reference images sit in the HUMAN turn of an edit. Inferred (no official multi-reference
# template was found): "before" puts every image block before the instruction, as the one-image template;
# "after" puts the instruction first.
REFERENCE_LAYOUT = "before"
DEFAULT_DECODER_STEPS = {"turbo": 8, "normal": 50}  # the distilled decoder's 8 even steps; the full 50


def _checked(obj, aliases: dict[str, str] | None = None) -> None:
    """Every field through its rule in llada_cli.limits (a range or a set of values); `aliases` names a
    field's rule where it differs from the field (`mode` follows the `decoder` rule)."""
    from .limits import check_flags

    aliases = aliases or {}
    check_flags({aliases.get(f.name, f.name): getattr(obj, f.name) for f in fields(obj)})


@dataclass(frozen=True, kw_only=True)
class ChatSettings:
    """Answering: a conversation in, text out."""

    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    max_tokens: int = 2048
    seed: int | None = None  # None: drawn per answer and reported
    system: str = SYS_UNDERSTAND

    def __post_init__(self) -> None:
        _checked(self)


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """Text to image codes: guidance against the `<uncondition>` prompt, optional thinking first."""

    sampler: SamplerSettings = field(default_factory=lambda: SamplerSettings(steps=8))
    cfg: float = 2.0  # 1.0 turns guidance off (one row)
    thinking: bool = False
    thinking_sampler: SamplerSettings = field(default_factory=SamplerSettings)
    thinking_length: int = 4096

    def __post_init__(self) -> None:
        _checked(self)


@dataclass(frozen=True, kw_only=True)
class EditSettings:
    """Editing: three-way guidance over the instruction and the source images."""

    sampler: SamplerSettings = field(default_factory=lambda: SamplerSettings(steps=8))
    cfg_text: float = 4.0
    cfg_image: float = 0.0  # 0: the no-image row is never computed
    budget: int = 512  # the crop-size list: 512, 768 or 1024
    fit: bool = False  # scale the source to the crop size instead of cutting the official window
    layout: str = REFERENCE_LAYOUT

    def __post_init__(self) -> None:
        _checked(self)


@dataclass(frozen=True, kw_only=True)
class InterleaveSettings:
    """A document of text runs and images. Defaults from SGLang-Omni's InterleavedGenerationParams, but
    1024 tokens per text run (a wait users accept) and the turbo decoder."""

    text_sampler: SamplerSettings = field(default_factory=SamplerSettings)
    image_sampler: SamplerSettings = field(default_factory=SamplerSettings)
    max_frames: int = 10
    max_new_tokens: int = 1024  # per text run, within what the context has left
    cfg: float = 0.0  # the first frame (0: use cfg_text)
    cfg_text: float = 7.5
    cfg_image: float = 1.5
    max_image_tokens: int = 4096
    system: str | None = None  # None: the interleaved system prompt (INTERLEAVE_SYSTEM)

    def __post_init__(self) -> None:
        _checked(self)


@dataclass(frozen=True, kw_only=True)
class DecoderSettings:
    """Codes to pixels: `turbo` (distilled, 8 even steps) or `normal` (50 shifted steps, guidance)."""

    mode: str = "turbo"
    steps: int | None = None  # None: 8 for turbo, 50 for normal
    resolution_multiplier: int = 2  # pixels per code = 16 x this

    def __post_init__(self) -> None:
        _checked(self, {"mode": "decoder", "steps": "decoder_steps"})

    @property
    def resolved_steps(self) -> int:
        return self.steps or DEFAULT_DECODER_STEPS[self.mode]

    @property
    def pixels_per_code(self) -> int:
        """Each code is a 16-pixel patch, scaled by the decoder's resolution multiplier."""
        return PIXELS_PER_CODE * self.resolution_multiplier


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How the engine loads and places a model: the same for every task it then serves."""

    device: str = "auto"
    quant: str = "none"
    decoder_quant: str = "none"
    max_vram: float | None = None  # GB of each GPU llada may use
    compile: bool = False
    low_memory: bool = False  # stages in turn (backbone, then decoder); the image encoder released
    image_precision: str = "bf16"  # the image tokenizer's arithmetic (siglip_vq.PRECISIONS)
    alpha: str = "drop"  # transparent pixels (llada_cli.io.images.ALPHA_MODES)

    def __post_init__(self) -> None:
        _checked(self, {"image_precision": "vq_precision"})
