"""The output sink of the running command, set by the root callback for the command's duration.

A context variable, not the click context: Typer ships its own copy of click, whose context stack the
public `click` package cannot see, and a server thread may run commands of its own later."""

from __future__ import annotations

from contextvars import ContextVar

from .output import Output

CURRENT: ContextVar[Output | None] = ContextVar("llada_output", default=None)


def output() -> Output:
    """The Output the root callback made; a default one outside a command (tests, library use)."""
    return CURRENT.get() or Output()


def set_output(out: Output):
    """Make `out` the running command's sink; returns the token `reset_output` takes."""
    return CURRENT.set(out)


def reset_output(token) -> None:
    CURRENT.reset(token)
