"""Answering on the backbone: conversation -> prompt ids -> block diffusion -> text, and the conversation.

`answer` knows nothing of the terminal or of loading: the engine gives it a loaded model and tokenizer.
Images slot into a user turn as `ImageBlock`s (the image tokenizer fills their codes). A `ChatSession`
keeps a conversation over an engine, for the REPL (and, later, a server's sessions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..errors import ConfigError, ContextOverflow, UsageError
from ..inputs.prompts import Turn, chat_prompt, encode
from ..inputs.tokenizer import TextTokenizer
from ..limits import seed_or_drawn
from ..runtime.device import memory_guard, peak_memory
from ..settings import ChatSettings

if TYPE_CHECKING:  # torch only where an answer is computed: `chat --server` starts without it
    from ..sampling.block_diffusion import SamplerStats, StepEvent

# Where an answer ends. <|endoftext|> is the LLaDA2 stop id; the Uni templates never use <|role_end|>, and a
# model that opens a new `<role>` has finished its turn. Unverified for the real model: one switch.
CHAT_STOP_STRINGS = ("<|endoftext|>", "<|role_end|>", "<role>")
# Text answers are restricted to the text vocabulary (image codes are never sampled in a text phase).
TEXT_ONLY = True


@dataclass(kw_only=True)
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
        """What `chat --json` prints (the same keys as before the settings were typed)."""
        s, settings = self.stats, self.settings
        flat = {**settings.sampler.record(), "max_tokens": settings.max_tokens, "system": settings.system}
        return {
            "answer": self.answer,
            "seed": self.seed,
            "settings": flat | {"seed": self.seed},
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


def stop_ids(tokenizer: TextTokenizer) -> tuple[int, ...]:
    """The ids of CHAT_STOP_STRINGS this tokenizer has."""
    found = []
    for text in CHAT_STOP_STRINGS:
        try:
            found.append(tokenizer.token_id(text))
        except ConfigError:
            continue
    return tuple(found)


def answer(
    model, tokenizer: TextTokenizer, turns: list[Turn], settings: ChatSettings, on_step=None
) -> ChatResult:
    """The model's next assistant turn after `turns`."""
    import torch

    from .runner import sample_rows

    config = model.cfg
    ids = encode(chat_prompt(turns, settings.system), tokenizer, config.image_token_offset)
    room = config.max_position_embeddings - len(ids)
    if room < 1:
        raise ContextOverflow(
            f"the conversation is {len(ids)} tokens; the context holds {config.max_position_embeddings}",
            "start over with /clear or a shorter prompt",
        )
    seed = seed_or_drawn(settings.seed)
    with memory_guard("backbone"):
        out, stats, _ = sample_rows(
            model,
            [ids],
            tokenizer.ids["mask"],
            settings.sampler,
            gen_length=min(settings.max_tokens, room),
            generator=torch.Generator().manual_seed(seed),
            stop_ids=stop_ids(tokenizer),
            vocab_range=(0, config.image_token_offset) if TEXT_ONLY else None,
            on_step=on_step,
        )
    report = getattr(model, "quant_report", None)
    return ChatResult(
        answer=tokenizer.decode(out),
        prompt_tokens=len(ids),
        generated_tokens=len(out),
        seed=seed,
        stats=stats,
        settings=settings,
        memory=peak_memory(),
        quant=report.record() if report is not None and report.scheme != "none" else None,
    )


@dataclass
class ChatSession:
    """A multi-turn conversation over one engine: turns change only when an answer is complete."""

    engine: object  # llada_cli.engine.Engine
    settings: ChatSettings = field(default_factory=ChatSettings)
    turns: list[Turn] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)  # what /save writes: turns with their images, edits

    def user_turn(self, text: str, images: list = ()) -> tuple[Turn, list]:
        """The next HUMAN turn: every image (encoded) first, then the text, as the template says."""
        if not text.strip():
            raise UsageError("the prompt is empty", "type a question")
        encoded = self.engine.encode(list(images)) if images else []
        return Turn("user", [*(e.block for e in encoded), text]), encoded

    def ask(
        self,
        text: str,
        images: list = (),
        on_step: Callable[[StepEvent], None] | None = None,
        turn: tuple[Turn, list] | None = None,
    ) -> ChatResult:
        """One question and its answer."""
        user, encoded = turn or self.user_turn(text, images)
        result = self.engine.answer([*self.turns, user], self.settings, on_step)
        result.images = encoded
        self.turns += [user, Turn("assistant", [result.answer])]
        self.log += [
            {"role": "user", "content": text, "images": [e.record() for e in encoded]},
            {"role": "assistant", "content": result.answer, "seed": result.seed},
        ]
        return result

    def set(self, key: str, value) -> None:
        """One setting by its REPL name (a sampler field or the chat's own), checked by its rule."""
        if key in ("max_tokens", "seed", "system"):
            self.settings = replace(self.settings, **{key: value})
        else:
            self.settings = replace(self.settings, sampler=replace(self.settings.sampler, **{key: value}))

    def edit_image(self, image, instruction: str, settings, decoder, seed: int):
        """(picture, its record, the source's record) for the REPL's /edit."""
        result = self.engine.edit([image], instruction, settings=settings, decoder=decoder, seed=seed)
        return result.image, result.record.to_json(), result.sources[0].record()

    def note_edit(self, instruction: str, source: dict, output: str, seed: int) -> None:
        """An /edit turn, for the transcript."""
        self.log.append(
            {"role": "edit", "instruction": instruction, "image": source, "output": output, "seed": seed}
        )

    def clear(self) -> None:
        self.turns.clear()
        self.log.clear()

    def transcript(self) -> dict:
        settings = {
            **self.settings.sampler.record(),
            "max_tokens": self.settings.max_tokens,
            "seed": self.settings.seed,
        }
        return {"system": self.settings.system, "settings": settings, "turns": list(self.log)}
