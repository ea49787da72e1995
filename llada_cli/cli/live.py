"""Showing text diffusion as it happens: a live view on a terminal (streaming in a pipe is textstream's)."""

from __future__ import annotations

from collections.abc import Callable

from ..pipelines.textstream import TokenCanvas

MASK_GLYPH = "░"


class LiveView:
    """Rich Live on stderr: finished text, then the current block with its masked positions as ░."""

    def __init__(self, console, canvas: TokenCanvas, decode: Callable[[list[int]], str]):
        from rich.live import Live

        self.canvas, self.decode, self.current = canvas, decode, None
        self.live = Live(console=console, transient=True, refresh_per_second=15)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def on_step(self, event) -> None:
        from rich.text import Text

        self.canvas.update(event)
        done = self.decode(self.canvas.decided(before=event.block_start))
        text = Text(done)
        run: list[int] = []
        first = max(self.canvas.prompt_len - event.block_start, 0)
        for t in event.block_tokens[first : event.end - event.block_start]:
            if t == self.canvas.mask_id:
                if run:
                    text.append(self.decode(run), style="bold")
                    run = []
                text.append(MASK_GLYPH, style="dim")
            elif t in self.canvas.stop_ids:
                break
            else:
                run.append(t)
        if run:
            text.append(self.decode(run), style="bold")
        self.current = text
        self.live.update(text)
