"""Interleaved text and images: the model writes text, opens an image, draws it, and writes on.

The loop alternates phases over one growing sequence: a text phase (text vocabulary only) ends at
end-of-text or when the model writes an image header `<|image|><|reserved_token_H|><|reserved_token_W|><boi>`;
an image phase then draws exactly H x W codes (image vocabulary only), appends them and `<|/image|>`,
and the frame is decoded at once. Guidance per frame: against the `<uncondition>` prompt for the first
frame, against the history with the current text removed (and, with an image scale, without the images)
for later frames. A malformed header ends the document with a message instead of a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..inputs.prompts import (
    ASSISTANT,
    HUMAN,
    INTERLEAVE_SYSTEM,
    SYS_INTERLEAVE_CHOICES,
    SYSTEM,
    ImageBlock,
    interleave_prompt,
)
from ..inputs.tokenizer import UNCONDITION
from ..sampling import guidance
from ..settings import InterleaveSettings
from .text2image import TextToImage


@dataclass
class Segment:
    kind: str  # "text", "image" or "error"
    text: str = ""
    frame: int | None = None
    grid: tuple[int, int] | None = None
    codes: list[int] = field(default_factory=list)
    seed: int | None = None
    seconds: float = 0.0
    guidance: str | None = None


@dataclass
class Document:
    segments: list[Segment] = field(default_factory=list)
    finish_reason: str = ""
    tokens: int = 0

    @property
    def frames(self) -> int:
        return sum(s.kind == "image" for s in self.segments)


class Interleaver:
    """Runs the state machine; `on_segment` is called as soon as a text run or an image is complete."""

    def __init__(self, t2i: TextToImage):
        self.t2i, self.tok, self.cfg = t2i, t2i.tokenizer, t2i.config

    def _ids(self, pieces) -> list[int]:
        return self.t2i.ids(pieces)

    def run(
        self,
        text: str,
        settings: InterleaveSettings,
        seed: int,
        images: list[ImageBlock] = (),
        on_segment: Callable[[Segment, list[int]], None] | None = None,
        on_step=None,
    ) -> Document:
        doc = Document()
        full = self._ids(interleave_prompt(text, settings.system, images=list(images)))
        generator = torch.Generator().manual_seed(seed)

        def emit(segment: Segment) -> None:
            doc.segments.append(segment)
            if on_segment:
                on_segment(segment, full)

        while True:
            room = self.cfg.max_position_embeddings - len(full)
            if room <= 0:
                doc.finish_reason = "context"
                break
            out = self._text_phase(full, min(settings.max_new_tokens, room), settings, generator, on_step)
            if out and out[-1] == self.tok.ids["boi"]:
                header, body = out[-4:], out[:-4]
                full += body
                if body:
                    emit(Segment("text", self.tok.decode(body)))
                problem, grid = self._check_header(header, full, settings)
                if problem:
                    emit(Segment("error", f"the model wrote an unusable image header: {problem}"))
                    doc.finish_reason = "malformed_header"
                    break
                frame_seed = seed + 1 + doc.frames
                segment = self._image_phase(full, header, grid, settings, frame_seed, doc.frames)
                full += (
                    header
                    + [self.cfg.image_token_offset + c for c in segment.codes]
                    + [self.tok.ids["image_end"]]
                )
                emit(segment)
                if doc.frames >= settings.max_frames:
                    doc.finish_reason = "max_frames"
                    break
                continue
            stopped = bool(out) and out[-1] in (self.tok.ids["eos"],)
            body = out[:-1] if stopped else out
            full += body
            if body:
                emit(Segment("text", self.tok.decode(body)))
            doc.finish_reason = "stop" if stopped else "length"
            break
        doc.tokens = len(full)
        return doc

    def _text_phase(self, full, length, settings: InterleaveSettings, generator, on_step) -> list[int]:
        return self.t2i.write_text(full, settings.text_sampler, length, generator, on_step)[0]

    def _check_header(
        self, header: list[int], full: list[int], settings
    ) -> tuple[str | None, tuple[int, int]]:
        ids = self.tok.ids
        if len(header) != 4 or header[0] != ids["image_start"]:
            return "it does not start with <|image|>", (0, 0)
        h, w = self.tok.reserved_value(header[1]), self.tok.reserved_value(header[2])
        if h is None or w is None:
            return "its size tokens are not <|reserved_token_N|>", (0, 0)
        if h <= 0 or w <= 0:
            return f"a {h}x{w} grid is empty", (h, w)
        if h * w > settings.max_image_tokens:
            return f"a {h}x{w} grid is more than --max-image-tokens {settings.max_image_tokens}", (h, w)
        if len(full) + 4 + h * w + 1 > self.cfg.max_position_embeddings:
            return f"a {h}x{w} image does not fit in the context left", (h, w)
        return None, (h, w)

    def _plan(self, full: list[int], header: list[int], settings) -> tuple[list[list[int]], object, str]:
        """Companion rows and combiner for this frame (the conditional row is `full + header`)."""
        scales_off = settings.cfg == 0 and settings.cfg_text == 0 and settings.cfg_image == 0
        if scales_off:
            return [], None, "none"
        end = self.tok.ids["image_end"]
        last_eoi = max((i for i, t in enumerate(full) if t == end), default=None)
        sys_text = settings.system or SYS_INTERLEAVE_CHOICES[INTERLEAVE_SYSTEM]
        uncond_prefix = self._ids([f"{SYSTEM} {sys_text} {HUMAN}", UNCONDITION, ASSISTANT])
        if last_eoi is None:
            scale = settings.cfg if settings.cfg > 0 else settings.cfg_text
            return [uncond_prefix + header], guidance.simple(scale), "simple"
        history, current = full[: last_eoi + 1], full[last_eoi + 1 :]
        no_text = history + self._ids([UNCONDITION]) + header
        if settings.cfg_image > 0:
            no_image = uncond_prefix + current + header
            return [no_text, no_image], guidance.three_way(settings.cfg_text, settings.cfg_image), "editing"
        if settings.cfg_text > 0:
            return [no_text], guidance.simple(settings.cfg_text), "simple-history"
        return [], None, "none"

    def _image_phase(self, full, header, grid, settings, seed, index) -> Segment:
        companions, combine, mode = self._plan(full, header, settings)
        start = time.perf_counter()
        result = self.t2i.generate_rows(
            [full + header, *companions],
            grid,
            settings.image_sampler,
            torch.Generator().manual_seed(seed),
            combine,
        )
        return Segment(
            "image",
            frame=index + 1,
            grid=grid,
            codes=result.codes,
            seed=seed,
            seconds=time.perf_counter() - start,
            guidance=mode,
        )
