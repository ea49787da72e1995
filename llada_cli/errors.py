"""Typed errors raised by the core, each carrying its exit code and a hint.

The CLI maps every `LladaError` to one line on stderr and its exit code; anything else is a bug and
shows a traceback only with `--debug`. The codes are stable and documented in the README.
"""

from __future__ import annotations

EXIT_RUNTIME = 1  # any failure at run time: model unavailable or damaged, out of memory, a bug
EXIT_USAGE = 2  # bad options, bad input files, conflicting flags
EXIT_BATCH_PARTIAL = 3  # a batch ran, but some of its items failed
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM
EXIT_MODEL_UNAVAILABLE = EXIT_RUNTIME
EXIT_OUT_OF_MEMORY = EXIT_RUNTIME


class LladaError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(LladaError):
    """Bad option values or conflicting flags."""

    exit_code = EXIT_USAGE


class ContextOverflow(UsageError):
    """A prompt (with the codes or answer it asks for) longer than the model's context."""


class ModelUnavailable(LladaError):
    """The checkpoint cannot be had: not cached offline, not found, gated, or no network."""

    exit_code = EXIT_MODEL_UNAVAILABLE


class IncompleteCheckpoint(ModelUnavailable):
    """A component folder lacks a file (a shard, a config); names the file."""

    def __init__(self, component: str, path: str, hint: str | None = None):
        super().__init__(
            f"checkpoint is incomplete: {component} needs {path}, which is missing",
            hint or "re-run `llada download MODEL` to fetch the missing files",
        )
        self.component = component
        self.path = path


class CheckpointMismatch(ModelUnavailable):
    """Tensors on disk do not match what the config says: missing, unexpected, wrong shape or dtype."""


class CorruptFile(ModelUnavailable):
    """A weight or config file cannot be parsed (truncated download, bad header)."""


class ConfigError(ModelUnavailable):
    """A config file lacks a required field or holds a value we cannot use."""


class OutOfMemory(LladaError):
    """Not enough memory for a stage; names the stage, the need and what is free."""

    exit_code = EXIT_OUT_OF_MEMORY


class Interrupted(LladaError):
    """SIGINT or SIGTERM: work stops cleanly, finished outputs stay, the exit code is 130."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, hint: str | None = None, signal: str = "SIGINT"):
        super().__init__(message, hint)
        self.signal = signal  # the REPL cancels a line or a turn on SIGINT, and leaves on SIGTERM


class ServerUnavailable(LladaError):
    """`--server`: the server cannot be reached, stopped answering, or broke a connection mid-request.
    A batch stops on it (the next item would meet it too); `--resume` finishes the batch later."""


class ServerBusy(ServerUnavailable):
    """`--server`: still busy (503, 429, 408) after the retries; a --parallel batch sends less at once."""


class ServerRefused(UsageError):
    """`--server`: the server refused a request as wrong (4xx), or llada refused to send one the server
    cannot honour; the message is the server's own, or names the setting."""


class ServerAccessRefused(ServerRefused):
    """`--server`: the server refuses this run as a whole (the key, the model): a batch stops once."""


class ServerFailed(LladaError):
    """`--server`: the server took the request and failed it (5xx)."""
