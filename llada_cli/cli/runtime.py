"""The output sink of the running command, kept on the root click context (no module globals)."""

from __future__ import annotations

from .output import Output


def output() -> Output:
    """The Output the root callback made; a default one outside a command (tests, library use)."""
    import click

    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx else None
    return obj if isinstance(obj, Output) else Output()
