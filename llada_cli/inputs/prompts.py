"""Every prompt layout LLaDA2.0-Uni was trained on, as data plus small builders.

A prompt is a list of pieces: template text (trusted: its special-token strings become special tokens),
`UserText` (the user's words: special-token strings in it stay plain text, so a prompt cannot forge a
role or an image) and `ImageBlock` (an image's grid header, and its codes when it is an input). The
strings are the official ones; spaces matter (the thinking companion has none around its system text).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .tokenizer import UNCONDITION, TextTokenizer, reserved_token

SYSTEM = "<role>SYSTEM</role>"
HUMAN = "<role>HUMAN</role>"
ASSISTANT = "<role>ASSISTANT</role>"

SYS_UNDERSTAND = "You are a multimodal understanding assistant."
SYS_T2I = "You are a text-to-image generation assistant."
SYS_T2I_THINKING = "You are a text-to-image generation assistant with a thinking process."
SYS_EDIT = "You are an image editing assistant."
# Two SGLang-Omni versions disagree on the interleaved system text; INTERLEAVE_SYSTEM picks one.
SYS_INTERLEAVE_CHOICES = {
    "a": "You are a interleaved generation assistant.",
    "an": "You are an interleaved text and image assistant.",
}
INTERLEAVE_SYSTEM = "an"


@dataclass(frozen=True)
class UserText:
    text: str


@dataclass(frozen=True)
class ImageBlock:
    """`<|image|><|reserved_token_H|><|reserved_token_W|><boi>` then, for an input image, its codes and
    `<|/image|>`. Codes are raw codebook indices (0..16383) in row-major order."""

    h: int
    w: int
    codes: tuple[int, ...] | None = None


Piece = str | UserText | ImageBlock


def system_open(system: str, spaced: bool = True) -> list[Piece]:
    return [f"{SYSTEM} {system} {HUMAN}" if spaced else f"{SYSTEM}{system}{HUMAN}"]


@dataclass
class Turn:
    """One conversation turn; `parts` holds text and images in order (images first in a HUMAN turn)."""

    role: str  # "user" or "assistant"
    parts: list[str | ImageBlock] = field(default_factory=list)


def chat_prompt(turns: list[Turn], system: str = SYS_UNDERSTAND) -> list[Piece]:
    """Understanding / multi-turn chat: HUMAN and ASSISTANT turns with no end markers, ending ASSISTANT."""
    pieces: list[Piece] = [f"{SYSTEM} {system} "]
    for turn in turns:
        pieces.append(HUMAN if turn.role == "user" else ASSISTANT)
        pieces.extend(UserText(p) if isinstance(p, str) else p for p in turn.parts)
    pieces.append(ASSISTANT)
    return pieces


def t2i_prompt(prompt: str, h: int, w: int, uncond: bool = False) -> list[Piece]:
    user: Piece = UNCONDITION if uncond else UserText(prompt)
    return [*system_open(SYS_T2I), user, ASSISTANT, ImageBlock(h, w)]


def t2i_thinking_prompt(prompt: str) -> list[Piece]:
    """Phase 1: the model writes its reasoning, then the image header itself."""
    return [*system_open(SYS_T2I_THINKING), UserText(prompt), ASSISTANT]


def t2i_thinking_uncond(h: int, w: int) -> list[Piece]:
    """Phase-2 companion: no spaces around the system text, as the reference writes it."""
    return [*system_open(SYS_T2I_THINKING, spaced=False), UNCONDITION, ASSISTANT, ImageBlock(h, w)]


def edit_prompt(
    sources: list[ImageBlock], instruction: str, h: int, w: int, variant: str = "cond", layout: str = "before"
) -> list[Piece]:
    """Editing: `cond`, `no_text` (instruction -> <uncondition>) or `no_image` (sources -> a lone <|image|>).

    Several sources are inferred to sit together before the instruction (`layout="before"`); "after" puts
    the instruction first."""
    if variant == "no_image":
        body: list[Piece] = ["<|image|>", UserText(instruction)]
    else:
        text: Piece = UNCONDITION if variant == "no_text" else UserText(instruction)
        body = [*sources, text] if layout == "before" else [text, *sources]
    return [*system_open(SYS_EDIT), *body, ASSISTANT, ImageBlock(h, w)]


def interleave_prompt(
    text: str, system: str | None = None, uncond: bool = False, images: list[ImageBlock] = ()
) -> list[Piece]:
    """The interleaved document prompt; input images go first in the HUMAN turn, as in chat."""
    sys_text = system or SYS_INTERLEAVE_CHOICES[INTERLEAVE_SYSTEM]
    user: list[Piece] = [UNCONDITION] if uncond else [*images, UserText(text)]
    return [*system_open(sys_text), *user, ASSISTANT]


def encode(pieces: list[Piece], tok: TextTokenizer, image_token_offset: int) -> list[int]:
    """Token ids of a prompt; template text and user text are encoded apart (they meet at special tokens,
    so this equals encoding the joined string, minus the forging of specials from user text)."""
    ids: list[int] = []
    for piece in pieces:
        if isinstance(piece, UserText):
            ids += tok.encode(piece.text, allow_special=False)
        elif isinstance(piece, ImageBlock):
            ids += image_ids(piece, tok, image_token_offset)
        else:
            ids += tok.encode(piece)
    return ids


def image_ids(block: ImageBlock, tok: TextTokenizer, image_token_offset: int) -> list[int]:
    header = [
        tok.ids["image_start"],
        tok.token_id(reserved_token(block.h)),
        tok.token_id(reserved_token(block.w)),
        tok.ids["boi"],
    ]
    if block.codes is None:
        return header
    if len(block.codes) != block.h * block.w:
        raise ValueError(f"an image of {block.h}x{block.w} tokens needs {block.h * block.w} codes")
    return header + [image_token_offset + c for c in block.codes] + [tok.ids["image_end"]]
