"""The one output sink: data to stdout, everything else to a rich console on stderr.

Model text and file paths never go through rich markup (`[image]` or `[/INST]` would vanish or raise);
they are written to stdout as plain text or JSON. Status, hints and warnings go to stderr, coloured only
when stderr is a terminal and NO_COLOR / TERM=dumb / --no-color do not say otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

QUIET, NORMAL, VERBOSE, DEBUG = 0, 1, 2, 3


def color_allowed(flag: bool | None = None) -> bool:
    if flag is False or "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stderr.isatty()


@dataclass
class Output:
    level: int = NORMAL
    color: bool = False
    debug: bool = False
    _console: Any = field(default=None, repr=False)

    @property
    def console(self):
        """Rich console on stderr, made on first use so `--help` never imports it."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                stderr=True,
                no_color=not self.color,
                highlight=False,
                soft_wrap=True,
                quiet=self.level == QUIET,
                force_terminal=self.color or None,
            )
        return self._console

    @property
    def interactive(self) -> bool:
        """Progress bars and live views only on a terminal, never when quiet."""
        return self.level > QUIET and sys.stderr.isatty()

    def data(self, text: str) -> None:
        write_stdout(text if text.endswith("\n") else text + "\n")

    def json(self, record: Any) -> None:
        self.data(json.dumps(record, ensure_ascii=False, default=str))

    def info(self, text: str) -> None:
        if self.level >= NORMAL:
            self.console.print(text, markup=False)

    def detail(self, text: str) -> None:
        if self.level >= VERBOSE:
            self.console.print(text, markup=False, style="dim")

    def warn(self, text: str) -> None:
        self.console.print("warning: " + text, markup=False, style="yellow")

    def error(self, message: str, hint: str | None = None) -> None:
        """Errors print even with --quiet: one line, then the hint."""
        err = _stderr_line
        err(("error: " + message), "bold red" if self.color else None)
        if hint:
            err("hint: " + hint, "dim" if self.color else None)


class StdoutClosed(Exception):
    """The reader of our stdout went away (`llada generate ... | head -1`): stop quietly, exit 0."""


def write_stdout(text: str) -> None:
    """Data to stdout, flushed; a closed stdout is an error (LladaError), a closed pipe StdoutClosed."""
    from ..errors import LladaError

    if sys.stdout is None:
        raise LladaError("stdout is closed: llada has nowhere to print its results", "run it without >&-")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None


def _stderr_line(text: str, style: str | None) -> None:
    if style is None:
        sys.stderr.write(text + "\n")
    else:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=False, style=style)
    sys.stderr.flush()


def setup_logging(level: int) -> None:
    """Our logger and third-party ones (diffusers, torch, huggingface_hub) follow -q/-v/-vv."""
    py_level = {QUIET: logging.ERROR, NORMAL: logging.WARNING, VERBOSE: logging.INFO, DEBUG: logging.DEBUG}[
        level
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(py_level if level >= DEBUG else max(py_level, logging.WARNING))
    logging.getLogger("llada").setLevel(py_level)
    # bitsandbytes warns on import about optional CPU kernels nobody asked for; its real errors still show
    logging.getLogger("bitsandbytes").setLevel(py_level if level >= DEBUG else logging.ERROR)
