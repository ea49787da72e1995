"""Where outputs go: names checked before any work, and reserved the moment they are chosen.

Every output path of a run is reserved atomically when it is chosen: a hidden lock file beside it
(`.NAME.llada-reserved`) is created with O_EXCL, and a name is free only while neither it, its codes file
nor its lock exists. So neither two items of one run nor two runs at once can pick the same path, whatever
order their images finish in; the lock goes when the image is written, or when the item fails or the run
stops. `--force` lets a run replace files that existed before it started, never a file that another item
of the same run, or another run, has taken.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import UsageError
from .files import check_replaceable, display_path

DEFAULT_NAME = "{index:04d}-{seed}-{slug}.png"  # a batch item's name: index, seed, prompt
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path, what: str = "output") -> str:
    """The Pillow format an output name asks for; any other extension is refused."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(
            f"{what} {display_path(path)}: llada writes .png, .jpg/.jpeg or .webp images",
            "end the name with .png (the default), .jpg or .webp",
        )
    return fmt


def check_relative_name(name: str, what: str) -> Path:
    """A name inside the output folder: not empty, no control characters, not absolute, no `..`, a file."""
    if not name.strip() or name.endswith(("/", os.sep)) or Path(name).name in ("", ".", ".."):
        raise UsageError(f"{what} {name!r} does not name a file", "e.g. --name '{index:04d}-{slug}.png'")
    if not name.isprintable():
        raise UsageError(f"{what} {display_path(name)} holds control characters (a newline?)")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise UsageError(f"{what} {name!r} would leave the output folder")
    image_format(rel, what)
    return rel


NAME_FIELDS = ("index", "seed", "slug", "width", "height")


def render_name(pattern: str, **fields) -> str:
    try:
        return pattern.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise UsageError(f"--name {pattern!r}: {exc}", f"fields: {', '.join(NAME_FIELDS)}") from None


def check_name_pattern(pattern: str) -> None:
    """`--name` is checked once, before any work, on sample values."""
    sample = render_name(pattern, index=0, seed=1, slug="image", width=1024, height=1024)
    check_relative_name(sample, f"--name {pattern!r} gives")


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.llada-reserved")


def codes_path(path: Path) -> Path:
    """The codes file beside an image: `a.png` -> `a.codes.json` (so `a.jpg` shares it: see `named`)."""
    return path.with_name(path.stem + ".codes.json")


class Reservations:
    """The output paths one run has taken; see the module docstring."""

    def __init__(self, folder: Path, force: bool = False, reclaim: bool = False):
        self.folder, self.force, self.started = Path(folder), force, time.time()
        self.reclaim = reclaim  # --resume: locks left by a killed run of this batch are taken back
        self.taken: set[Path] = set()
        self.codes: set[Path] = set()  # each taken name's codes file (a.png and a.jpg share a.codes.json)
        self.locks: set[Path] = set()
        self.created: list[Path] = []  # folders this run made, removed again if nothing lands in them

    def single(self, path: Path) -> Path:
        """`-o FILE`: that name or an error, before any work."""
        image_format(path, "--output")
        if not self._take(Path(path)):
            raise UsageError(f"{display_path(path)} exists", "pass --force to overwrite it")
        return Path(path)

    def named(self, name: str, what: str) -> Path:
        """A name a prompts or edits file gave: inside the folder by every route, symlinks included."""
        path = self.folder / check_relative_name(name, what)
        if not path.parent.resolve().is_relative_to(self.folder.resolve()):
            raise UsageError(f"{what} {name!r} leaves the output folder through a symbolic link")
        if path in self.taken:
            raise UsageError(f"{what} {name!r} is already the output of another item of this run")
        if codes_path(path) in self.codes:
            raise UsageError(f"{what} {name!r} would share its codes file {codes_path(path).name} with another item of this run", "give the two outputs different names, not only different extensions")  # fmt: skip
        if not self._take(path):
            raise UsageError(f"{display_path(path)} exists", "pass --force to overwrite it")
        return path

    def pattern(self, name: str) -> Path:
        """A name from the --name pattern: the first of NAME, NAME-1, NAME-2... that is free."""
        stem = self.folder / check_relative_name(name, "--name gives")
        path, n = stem, 1
        while not self._take(path):
            path = stem.with_name(f"{stem.stem}-{n}{stem.suffix}")
            n += 1
        return path

    def numbered(self, template: str) -> Path:
        """The first free of `template` with n = 1, 2, ... (`llada-edit-{n}.png`)."""
        n = 1
        while not self._take(path := self.folder / check_relative_name(template.format(n=n), "name")):
            n += 1
        return path

    def claim(self, path: Path) -> bool:
        """A file of the run that is not an image (a document): reserved as image names are."""
        return self._take(Path(path))

    def keep(self, path: Path) -> None:
        """A path an earlier, interrupted run of this batch chose (its manifest says so): ours again."""
        path = Path(path)
        self._lock(path, reclaim=True)
        self._lock(codes_path(path), reclaim=True)
        self.taken.add(path)
        self.codes.add(codes_path(path))

    def _take(self, path: Path) -> bool:
        """Reserve `path` and its codes file (both locked: another run must not take either)."""
        codes = codes_path(path)
        if path in self.taken or codes in self.codes:
            return False
        check_replaceable(path)
        if not self._free(path):
            return False
        self._make_parents(path)
        if not self._lock(path, self.reclaim):
            return False
        if not self._lock(codes, self.reclaim) or not self._free(path):  # another run, meanwhile
            self._unlock(path)
            return False
        self.taken.add(path)
        self.codes.add(codes)
        return True

    def _free(self, path: Path) -> bool:
        exists = [p for p in (path, codes_path(path)) if os.path.lexists(p)]
        return not exists or (self.force and all(self._predates(p) for p in exists))

    def _predates(self, path: Path) -> bool:
        """--force replaces a file that existed before this run started."""
        try:
            return os.lstat(path).st_mtime < self.started
        except FileNotFoundError:
            return True

    def _lock(self, path: Path, reclaim: bool) -> bool:
        lock = lock_path(path)
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            if not reclaim:
                return False
        self.locks.add(lock)
        return True

    def _unlock(self, path: Path) -> None:
        """The locks of `path` and of its codes file."""
        for lock in (lock_path(Path(path)), lock_path(codes_path(Path(path)))):
            if lock in self.locks:
                self.locks.discard(lock)
                try:
                    lock.unlink()
                except OSError:
                    pass

    def _make_parents(self, path: Path) -> None:
        missing = [p for p in path.parents if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.created += [p for p in reversed(missing) if p not in self.created]

    def written(self, path: Path) -> None:
        """The item's file is in place: its name needs no lock any more (it exists)."""
        self._unlock(path)

    def release(self, path: Path) -> None:
        """The item will not write `path` (it failed): the name is free again for later runs."""
        self._unlock(path)

    def release_all(self) -> None:
        """Every lock still held goes, and so does every folder this run made that stayed empty."""
        for lock in list(self.locks):
            self._unlock(lock.with_name(lock.name.removeprefix(".").removesuffix(".llada-reserved")))
        for folder in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
