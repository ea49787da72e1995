"""Batch bookkeeping: prompt files, the list of items, output names, and the resumable manifest.

A bad line in a prompt file fails only its own item (with its line number); the rest run. Output names
come from a pattern or from the file, and can never leave the output folder. The manifest is JSON Lines,
appended and flushed at every state change, so an interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UsageError

ITEM_KEYS = {
    "prompt": str,
    "seed": int,
    "width": int,
    "height": int,
    "steps": int,
    "cfg": float,
    "output": str,
}
EDIT_KEYS = {
    "image": (str, list),
    "instruction": str,
    "seed": int,
    "steps": int,
    "cfg_text": float,
    "cfg_image": float,
    "output": str,
}
DEFAULT_NAME = "{index:04d}-{seed}-{slug}.png"
MANIFEST = "manifest.jsonl"


@dataclass
class Entry:
    """One prompt from the command line or a file, before expansion by -n."""

    fields: dict
    line: int | None = None
    error: str | None = None


def _check_fields(raw: dict, where: str, keys: dict = ITEM_KEYS, required: str = "prompt") -> dict:
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(keys)}")
    out = {}
    for key, value in raw.items():
        if value in (None, ""):
            continue
        kind = keys[key]
        if isinstance(kind, tuple):  # several JSON types accepted as they are
            if not isinstance(value, kind):
                raise ValueError(f"{where}: {key} has the wrong type {type(value).__name__}")
            out[key] = value
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, str) and kind is not str:
            try:
                value = kind(value)
            except ValueError:
                raise ValueError(f"{where}: {key} must be {kind.__name__}, got {value!r}") from None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be {kind.__name__}, got {type(value).__name__}")
        out[key] = value
    if not str(out.get(required, "")).strip():
        raise ValueError(f"{where}: no {required}")
    return out


def read_prompts_file(path: Path) -> list[Entry]:
    """.txt (a prompt per line, # comments), .jsonl (objects) or .csv (a header with a prompt column)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"prompts file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"prompts file {path} is a folder") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"prompts file {path} is not UTF-8 text (byte {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        entries = _jsonl(text, path.name)
    elif suffix == ".csv":
        entries = _csv(text, path.name)
    else:
        entries = [
            Entry({"prompt": line.strip()}, n)
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not entries:
        raise UsageError(f"prompts file {path} holds no prompts")
    return entries


def read_edits_file(path: Path) -> list[Entry]:
    """A .jsonl of edits: objects with `image` (a path or a list of paths), `instruction` and options."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"edits file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"edits file {path} is not UTF-8 text (byte {exc.start})") from None
    entries = _jsonl(text, Path(path).name, EDIT_KEYS, "instruction")
    for entry in entries:
        if entry.error is None and "image" not in entry.fields:
            entry.error = f"{Path(path).name}:{entry.line}: no image"
    if not entries:
        raise UsageError(f"edits file {path} holds no edits")
    return entries


def _jsonl(text: str, name: str, keys: dict = ITEM_KEYS, required: str = "prompt") -> list[Entry]:
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError(f"{name}:{n}: expected a JSON object")
            entries.append(Entry(_check_fields(raw, f"{name}:{n}", keys, required), n))
        except json.JSONDecodeError as exc:
            entries.append(Entry({}, n, f"{name}:{n}: not valid JSON ({exc.msg})"))
        except ValueError as exc:
            entries.append(Entry({}, n, str(exc)))
    return entries


def _csv(text: str, name: str) -> list[Entry]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        raise UsageError(
            f"{name} has no 'prompt' column", "the first line must be a header, e.g. prompt,seed"
        )
    entries = []
    for row in reader:
        n = reader.line_num
        try:
            entries.append(Entry(_check_fields({k: v for k, v in row.items() if k}, f"{name}:{n}"), n))
        except ValueError as exc:
            entries.append(Entry({}, n, str(exc)))
    return entries


@dataclass
class Item:
    index: int
    prompt: str
    seed: int
    width: int
    height: int
    steps: int | None = None
    cfg: float | None = None
    output: str | None = None
    line: int | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        key = json.dumps(
            [self.index, self.prompt, self.seed, self.width, self.height, self.steps, self.cfg, self.extra],
            sort_keys=True,
        )
        return hashlib.sha1(key.encode()).hexdigest()[:12]


def plan_items(entries: list[Entry], n: int, base_seed: int, width: int, height: int) -> list[Item]:
    """Expand entries by -n; image i gets seed base + i unless its entry names one."""
    items: list[Item] = []
    for entry in entries:
        for copy in range(n):
            f = entry.fields
            index = len(items)
            seed = f["seed"] + copy if "seed" in f else base_seed + index
            items.append(
                Item(
                    index,
                    f.get("prompt", ""),
                    seed,
                    f.get("width", width),
                    f.get("height", height),
                    f.get("steps"),
                    f.get("cfg"),
                    f.get("output") if n == 1 else None,
                    entry.line,
                    entry.error,
                )
            )
    return items


def slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "image"


def output_path(item: Item, out_dir: Path, pattern: str, force: bool) -> Path:
    """Where an item's PNG goes: its own name (kept inside out_dir) or the pattern, never over a file."""
    if item.output:
        name = Path(item.output)
        if name.is_absolute() or ".." in name.parts:
            raise UsageError(f"output name {item.output!r} would leave the output folder")
        path = out_dir / name
        if path.exists() and not force:
            raise UsageError(f"{path} exists", "pass --force to overwrite it")
        return path
    try:
        name = pattern.format(
            index=item.index, seed=item.seed, slug=slug(item.prompt), width=item.width, height=item.height
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"--name pattern {pattern!r}: {exc}", "fields: index, seed, slug, width, height"
        ) from None
    path = out_dir / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise UsageError(f"--name pattern {pattern!r} would leave the output folder")
    if not force:
        stem, n = path, 1
        while path.exists():
            path = stem.with_name(f"{stem.stem}-{n}{stem.suffix}")
            n += 1
    return path


def codes_path(png: Path) -> Path:
    return png.with_name(png.stem + ".codes.json")


class Manifest:
    """`manifest.jsonl`: one line per state change of an item (codes, done, failed); the last line wins."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        state: dict[str, dict] = {}
        if not self.path.exists():
            return state
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if isinstance(record, dict) and "id" in record:
                state[record["id"]] = record
        return state

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def item_record(item: Item, state: str, **extra) -> dict:
    base = {k: v for k, v in asdict(item).items() if k not in ("extra", "error") and v is not None}
    return {"id": item.id, "state": state, **base, **extra}
