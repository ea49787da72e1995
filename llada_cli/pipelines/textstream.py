"""Text as the sampler decides it: StepEvents to the finished text so far, and each finished block's
new text handed on (to stdout in a pipe, to a server's stream, to JSON events)."""

from __future__ import annotations

from collections.abc import Callable


class TokenCanvas:
    """The generated tokens so far, by absolute position, fed by sampler StepEvents. A run with another
    prompt length (the next text phase of an interleaved document) starts the canvas afresh."""

    def __init__(self, mask_id: int, stop_ids: tuple[int, ...]):
        self.mask_id, self.stop_ids = mask_id, set(stop_ids)
        self.prompt_len = self.block_start = -1
        self.tokens: dict[int, int] = {}

    def update(self, event) -> bool:
        """Record a step; True when it opened a new block (so the previous one is final)."""
        if event.prompt_len != self.prompt_len:
            self.prompt_len = self.block_start = event.prompt_len
            self.tokens = {}
        for i, t in enumerate(event.block_tokens):
            if self.prompt_len <= event.block_start + i < event.end:  # the tail past the cut is not shown
                self.tokens[event.block_start + i] = t
        opened = event.block_start > self.block_start
        self.block_start = event.block_start
        return opened

    def decided(self, before: int | None = None) -> list[int]:
        """Tokens from the start of the answer up to the first mask or stop (or `before`)."""
        out = []
        pos = self.prompt_len
        while pos in self.tokens and (before is None or pos < before):
            t = self.tokens[pos]
            if t == self.mask_id or t in self.stop_ids:
                break
            out.append(t)
            pos += 1
        return out


class BlockStreamer:
    """Hands the answer to `emit` as blocks are finished; `finish` hands on what is left."""

    def __init__(
        self,
        canvas: TokenCanvas,
        decode: Callable[[list[int]], str],
        emit: Callable[[str], None],
    ):
        self.canvas, self.decode, self.emit, self.written = canvas, decode, emit, ""

    def on_step(self, event) -> None:
        if event.prompt_len != self.canvas.prompt_len:
            self.written = ""  # a new text run (the next text phase of a document)
        if self.canvas.update(event):
            self._emit(self.decode(self.canvas.decided(before=event.block_start)).rstrip("\ufffd"))

    def _emit(self, text: str) -> None:
        if text.startswith(self.written) and len(text) > len(self.written):
            self.emit(text[len(self.written) :])
            self.written = text

    def rest(self, answer: str) -> str:
        """What is still to be written of `answer`; all of it, on a new line, if a decode changed an
        earlier character."""
        rest = answer[len(self.written) :] if answer.startswith(self.written) else "\n" + answer
        self.written = ""
        return rest

    def finish(self, answer: str) -> None:
        self.emit(self.rest(answer) + "\n")
