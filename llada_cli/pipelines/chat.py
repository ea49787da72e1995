"""Text chat on the backbone: conversation -> prompt ids -> block diffusion -> answer.

The pipeline loads its components once and answers many turns; it knows nothing of the terminal. Images
slot into a user turn as `ImageBlock`s (the image tokenizer fills their codes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..inputs.prompts import SYS_UNDERSTAND, Turn, chat_prompt, encode
from ..inputs.tokenizer import TextTokenizer
from ..runtime.device import memory_guard
from ..sampling.block_diffusion import SamplerConfig, SamplerStats, StepEvent, run

# Where an answer ends. <|endoftext|> is the LLaDA2 stop id; the Uni templates never use <|role_end|>, and a
# model that opens a new `<role>` has finished its turn. Unverified for the real model: one switch.
CHAT_STOP_STRINGS = ("<|endoftext|>", "<|role_end|>", "<role>")
# Text answers are restricted to the text vocabulary (image codes are never sampled in a text phase).
TEXT_ONLY = True


@dataclass
class ChatSettings:
    max_tokens: int = 2048
    steps: int = 32
    block_length: int = 32
    threshold: float = 0.95
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    system: str = SYS_UNDERSTAND
    sprint: object = None  # SprintSettings: the lossy fast path; None keeps the exact cache

    def check(self) -> None:
        """Each setting by the rule of its flag (llada_cli.limits), the one that is wrong named."""
        from ..limits import check_flags

        check_flags(asdict(self))


@dataclass
class ChatResult:
    answer: str
    prompt_tokens: int
    generated_tokens: int
    seed: int
    stats: SamplerStats
    settings: ChatSettings
    images: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    quant: dict | None = None  # what loading packed, when a quantization was chosen

    def record(self) -> dict:
        s = self.stats
        return {
            "answer": self.answer,
            "seed": self.seed,
            "settings": asdict(self.settings) | {"seed": self.seed},  # includes the SPRINT settings
            "images": [img.record() for img in self.images],
            "tokens": {
                "prompt": self.prompt_tokens,
                "generated": self.generated_tokens,
                "image": sum(len(img.codes) for img in self.images),
            },
            "memory": self.memory,
            "quant": self.quant,
            "sampler": {
                "forward_passes": s.forward_passes,
                "blocks": s.committed_blocks,
                "tokens_per_pass": round(s.tokens_per_pass, 3),
                "seconds": round(s.seconds, 4),
            },
        }


class ChatPipeline:
    """Backbone + tokenizer, loaded once; the image encoder loads on the first image."""

    def __init__(self, model, tokenizer: TextTokenizer, encoder=None, root: Path | None = None):
        self.model, self.tokenizer, self.cfg, self.encoder = model, tokenizer, model.cfg, encoder
        self.root = root
        self._decoder = None
        self.stop_ids = tuple(tokenizer.token_id(s) for s in CHAT_STOP_STRINGS if _has(tokenizer, s))

    @classmethod
    def load(
        cls,
        root: Path,
        device: str,
        dtype,
        image_precision: str = "bf16",
        low_memory: bool = False,
        quant: str = "none",
        layer_devices: list[str] | None = None,
        alpha: str = "drop",
    ) -> ChatPipeline:
        from ..checkpoint.components import load_backbone
        from .understand import ImageEncoder

        tokenizer = TextTokenizer(Path(root) / "tokenizer.json")
        with memory_guard("loading the backbone"):
            model = load_backbone(Path(root), device, dtype, quant, layer_devices)
        tokenizer.check_image_offset(model.cfg.image_token_offset)
        encoder = ImageEncoder(
            Path(root), device, precision=image_precision, alpha=alpha, low_memory=low_memory
        )
        return cls(model, tokenizer, encoder, Path(root))

    def edit(self, image, instruction: str, seed: int, settings=None):
        """Edit one picture of the conversation (for `/edit`): returns (PIL image, generation record).

        The decoder stack loads on the first edit (`decoder-turbo/`, `vae/`, SigVQ from the same folder)."""
        from .. import __version__
        from ..checkpoint.layout import check_complete
        from .decode import DecoderStack
        from .edit import Editor, EditSettings
        from .text2image import ImageTokenGenerator

        settings = settings or EditSettings()
        if self._decoder is None:
            check_complete(self.root, ("sigvq", "decoder-turbo", "vae"))
            compute_dtype = self.model.lm_head.weight.dtype  # the decoder runs in the backbone's dtype
            self._decoder = DecoderStack.load(self.root, "turbo", self.encoder.device, compute_dtype)
        editor = Editor(ImageTokenGenerator(self.model, self.tokenizer), self.encoder)
        sources = editor.sources([image], settings)
        codes = editor.edit(sources, instruction, settings, seed)
        picture, _ = self._decoder.decode(codes.codes, *codes.grid, seed)
        record = {
            "llada": __version__,
            "prompt": instruction,
            "instruction": instruction,
            "seed": seed,
            "grid": list(codes.grid),
            "images": [s.record() for s in sources],
            "settings": {
                "steps": settings.steps,
                "cfg_text": settings.cfg_text,
                "cfg_image": settings.cfg_image,
                "decoder": "turbo",
                "decoder_steps": 8,
            },
        }
        return picture, record

    def encode_images(self, images: list) -> list:
        if not images:
            return []
        if self.encoder is None:
            raise UsageError("this pipeline was built without an image encoder")
        return self.encoder.encode(images)

    def prompt_ids(self, turns: list[Turn], system: str) -> list[int]:
        return encode(chat_prompt(turns, system), self.tokenizer, self.cfg.image_token_offset)

    def reply(
        self, turns: list[Turn], settings: ChatSettings, on_step: Callable[[StepEvent], None] | None = None
    ) -> ChatResult:
        import torch

        from .runner import BackboneRunner

        settings.check()
        ids = self.prompt_ids(turns, settings.system)
        room = self.cfg.max_position_embeddings - len(ids)
        if room < 1:
            raise UsageError(
                f"the conversation is {len(ids)} tokens; the context holds "
                f"{self.cfg.max_position_embeddings}",
                "start over with /clear or a shorter prompt",
            )
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(4), "little")
        sampler = SamplerConfig(
            gen_length=min(settings.max_tokens, room),
            block_length=settings.block_length,
            steps=settings.steps,
            threshold=settings.threshold,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            stop_ids=self.stop_ids,
            vocab_range=(0, self.cfg.image_token_offset) if TEXT_ONLY else None,
            sprint=settings.sprint,
        )
        runner = BackboneRunner(
            self.model,
            [ids],
            self.tokenizer.ids["mask"],
            sampler.gen_length,
            settings.block_length,
            settings.sprint,
        )
        stats = SamplerStats()
        with memory_guard("backbone"):
            out = run(
                runner,
                ids,
                self.tokenizer.ids["mask"],
                sampler,
                torch.Generator().manual_seed(seed),
                stats,
                on_step,
            )
        from ..runtime.device import peak_memory

        return ChatResult(
            self.tokenizer.decode(out),
            len(ids),
            len(out),
            seed,
            stats,
            settings,
            memory=peak_memory(),
            quant=_quant_record(self.model),
        )


def _has(tok: TextTokenizer, text: str) -> bool:
    from ..errors import ConfigError

    try:
        tok.token_id(text)
    except ConfigError:
        return False
    return True


@dataclass
class ChatSession:
    """A multi-turn conversation over one loaded pipeline."""

    pipeline: ChatPipeline
    settings: ChatSettings = field(default_factory=ChatSettings)
    turns: list[Turn] = field(default_factory=list)

    def user_turn(self, text: str, images: list = ()) -> tuple[Turn, list]:
        """The next HUMAN turn: every image (encoded) first, then the text, as the template says."""
        if not text.strip():
            raise UsageError("the prompt is empty", "type a question")
        encoded = self.pipeline.encode_images(list(images))
        return Turn("user", [*(e.block for e in encoded), text]), encoded

    log: list[dict] = field(default_factory=list)  # what /save writes: turns with their images, edits

    def ask(
        self,
        text: str,
        images: list = (),
        on_step: Callable[[StepEvent], None] | None = None,
        turn: tuple[Turn, list] | None = None,
    ) -> ChatResult:
        """One question and its answer; the conversation changes only when the answer is complete."""
        user, encoded = turn or self.user_turn(text, images)
        result = self.pipeline.reply([*self.turns, user], self.settings, on_step)
        result.images = encoded
        self.turns += [user, Turn("assistant", [result.answer])]
        self.log += [
            {"role": "user", "content": text, "images": [e.record() for e in encoded]},
            {"role": "assistant", "content": result.answer, "seed": result.seed},
        ]
        return result

    def note_edit(self, instruction: str, source: dict, output: str, seed: int) -> None:
        """An /edit turn, for the transcript."""
        self.log.append(
            {"role": "edit", "instruction": instruction, "image": source, "output": output, "seed": seed}
        )

    def clear(self) -> None:
        self.turns.clear()
        self.log.clear()

    def transcript(self) -> dict:
        return {"system": self.settings.system, "settings": asdict(self.settings), "turns": list(self.log)}


def _quant_record(model) -> dict | None:
    report = getattr(model, "quant_report", None)
    return report.record() if report is not None and report.scheme != "none" else None
