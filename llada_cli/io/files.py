"""Files in and out, the way users expect them.

Writes are atomic (a temporary file beside the target, then a rename), get the permissions the user's
umask gives, and never rename over anything but a regular file (a device node, a FIFO, a folder or a
symbolic link at the target is refused). Reads refuse what is not a regular file (a FIFO or `/dev/zero`
would be read forever), cap the size, and take UTF-8 with or without a byte-order mark.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ..errors import UsageError

MiB = 1 << 20


def umask() -> int:
    """The process umask (Linux reports it in /proc; elsewhere it is set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What `open(path, "w")` would give a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


def check_replaceable(path: Path) -> None:
    """An existing target must be a regular file: renaming over `/dev/null` or a FIFO replaces the node."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a folder"
            if stat.S_ISDIR(st.st_mode)
            else "a symbolic link"
            if stat.S_ISLNK(st.st_mode)
            else "not a regular file"
        )
        raise UsageError(
            f"{display_path(path)} is {kind}; llada only writes regular files", "choose another output name"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all, with the umask's permissions."""
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        check_replaceable(path)  # again: the target may have changed while we wrote
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_input_bytes(path: Path, what: str, limit: int) -> bytes:
    """The bytes of a user's input file, refusing folders, devices, FIFOs and files over `limit` bytes."""
    shown = f"{what} {display_path(path)}"
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{shown} is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{shown} is not a regular file (a device, FIFO or socket)", "pass a file")
        if st.st_size > limit:
            raise UsageError(
                f"{shown} is {st.st_size / MiB:.1f} MiB, more than llada reads ({limit / MiB:.0f} MiB)"
            )
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{shown} does not exist") from None
    except PermissionError:
        raise UsageError(f"{shown} cannot be read (permission denied)") from None
    except OSError as exc:
        raise UsageError(f"{shown} cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew while we read it
        raise UsageError(f"{shown} is more than llada reads ({limit / MiB:.0f} MiB)")
    return data


def read_input_text(path: Path, what: str, limit: int = 64 * MiB) -> str:
    """A user's text file as UTF-8; a byte-order mark at the start is dropped."""
    data = read_input_bytes(path, what, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {display_path(path)} is not UTF-8 text (byte {exc.start})") from None


def ensure_writable_dir(path: Path) -> Path:
    """Prove, before any work, that files can be written into `path`, without creating it: the folder
    (or its nearest existing parent) must be a writable folder. Writers create it on their first file,
    so a run that fails before writing anything leaves no empty folder behind."""
    path = Path(path)
    probe_dir = path
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        if not probe_dir.is_dir():
            raise NotADirectoryError(20, "not a folder")
        fd, probe = tempfile.mkstemp(prefix=".llada-write-test-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = (
            display_path(path) if probe_dir == path else f"{display_path(path)} ({display_path(probe_dir)})"
        )
        raise UsageError(
            f"cannot write to {where}: {exc.strerror or exc}", "choose another --out-dir"
        ) from None
    return path


def display_path(path) -> str:
    """A path as one safe line: control characters (a newline in a name) shown escaped, shell style."""
    text = str(path)
    if text.isprintable():
        return text
    escaped = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text.replace("'", "\\'"))
    return f"$'{escaped}'"


def read_stdin_text(limit: int = 4 * MiB) -> str:
    """A prompt piped on stdin, at most `limit` bytes (`< /dev/zero` is refused, not read forever)."""
    import sys

    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise UsageError(
            f"stdin holds more than {limit // MiB} MiB; a prompt is far shorter", "pipe a prompt"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"stdin is not UTF-8 text (byte {exc.start})") from None
