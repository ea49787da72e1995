"""The `llada` command: global flags, command registration and the one error funnel.

Only typer is imported here; each command imports torch, diffusers or PIL inside its body, so
`llada --help` and shell completion stay instant.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Annotated

import typer

from .. import __version__
from ..errors import EXIT_RUNTIME, Interrupted, LladaError
from . import chat, edit, generate, interleave, manage
from .output import DEBUG, NORMAL, QUIET, VERBOSE, Output, color_allowed, setup_logging

app = typer.Typer(
    name="llada",
    help="Run LLaDA2.0-Uni on your own GPU: chat about images, generate, edit and interleave.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"llada {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Errors only on stderr.")] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More detail (-vv: debug logs).")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colour on stderr (NO_COLOR works too).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run LLaDA2.0-Uni on your own GPU: chat about images, generate, edit and interleave."""
    level = QUIET if quiet else (NORMAL, VERBOSE, DEBUG)[min(verbose, 2)]
    ctx.obj = Output(level=level, color=color_allowed(False if no_color else None), debug=debug)
    setup_logging(level)


app.command("chat")(chat.chat)
app.command("generate")(generate.generate)
app.command("decode")(generate.decode)
app.command("edit")(edit.edit)
app.command("interleave")(interleave.interleave)
app.command("models")(manage.models)
app.command("download")(manage.download)
app.command("doctor")(manage.doctor)


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; every known error becomes one line plus a hint.

    Typer handles usage errors itself (message, exit 2). SIGINT and SIGTERM raise `Interrupted` so that
    commands unwind through their cleanup and the process exits 130, not click's generic 1.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LLADA_DEBUG") == "1"
    out = Output(color=color_allowed(False if "--no-color" in args else None), debug=debug)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app(args=args, prog_name="llada")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_RUNTIME)
    except LladaError as exc:
        if debug:
            traceback.print_exc()
        out.error(exc.message, exc.hint)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        out.error(
            f"internal error: {type(exc).__name__}: {exc}", "re-run with --debug and report the traceback"
        )
        return EXIT_RUNTIME
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> None:
    sys.exit(run())
