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
from . import chat, decode, edit, generate, interleave, manage, serve
from .output import DEBUG, NORMAL, QUIET, VERBOSE, Output, StdoutClosed, color_allowed, setup_logging
from .runtime import reset_output, set_output

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
    set_output(ctx.obj)  # run() puts the previous sink back when the command ends
    setup_logging(level)


app.command("chat")(chat.chat)
app.command("generate")(generate.generate)
app.command("decode")(decode.decode)
app.command("edit")(edit.edit)
app.command("interleave")(interleave.interleave)
app.command("serve")(serve.serve)
app.command("models")(manage.models)
app.command("download")(manage.download)
app.command("doctor")(manage.doctor)


GLOBAL_FLAGS = {"-q", "--quiet", "-v", "--verbose", "--debug", "--no-color"}


def _is_global(arg: str) -> bool:
    return arg in GLOBAL_FLAGS or (len(arg) > 2 and arg[0] == "-" and set(arg[1:]) == {"v"})  # -vv


def hoist_global_flags(args: list[str]) -> list[str]:
    """-q, -v, --debug and --no-color after the subcommand mean what they mean before it: move them
    there. The subcommand's options that take a value keep it (`--system -q` stays a system prompt)."""
    sub_at = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if sub_at is None or not any(_is_global(a) for a in args[sub_at + 1 :]):
        return args
    sub = typer.main.get_command(app).commands.get(args[sub_at])
    valued = {
        opt
        for p in (sub.params if sub else [])
        if getattr(p, "opts", None) and not getattr(p, "is_flag", False) and not getattr(p, "count", False)
        for opt in p.opts + list(getattr(p, "secondary_opts", []))
        if opt.startswith("-")
    }
    moved, rest, i = [], [], sub_at + 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if _is_global(arg):
            moved.append(arg)
        else:
            rest.append(arg)
            if arg in valued and i + 1 < len(args):
                rest.append(args[i + 1])
                i += 1
        i += 1
    return args[:sub_at] + moved + [args[sub_at]] + rest


def _raise_interrupted(signum, frame) -> None:
    name = signal.Signals(signum).name
    raise Interrupted(f"interrupted by {name}", signal=name)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; every known error becomes one line plus a hint.

    Typer handles usage errors itself (message, exit 2). SIGINT and SIGTERM raise `Interrupted` so that
    commands unwind through their cleanup and the process exits 130, not click's generic 1.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LLADA_DEBUG") == "1"
    out = Output(color=color_allowed(False if "--no-color" in args else None), debug=debug)
    if sys.stdout is None:  # `>&-`: refuse before any work rather than lose the results at the end
        out.error("stdout is closed: llada has nowhere to print its results", "run it without >&-")
        return EXIT_RUNTIME
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    token = set_output(out)
    try:
        app(args=hoist_global_flags(args), prog_name="llada")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_RUNTIME)
    except LladaError as exc:
        if debug:
            traceback.print_exc()
        out.error(exc.message, exc.hint)
        return exc.exit_code
    except (StdoutClosed, BrokenPipeError):  # the reader has what it wanted: stop quietly, as `yes` would
        _silence_stdout()
        return 0
    except Exception as exc:  # a bug: say so, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        out.error(
            f"internal error: {type(exc).__name__}: {exc}", "re-run with --debug and report the traceback"
        )
        return EXIT_RUNTIME
    finally:
        reset_output(token)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def main() -> None:
    sys.exit(run())
