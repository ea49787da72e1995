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
from .io.files import display_path, read_input_text
from .io.outputs import Reservations, render_name

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
    """A file line's fields, each through the same rule as its flag (llada_cli.limits)."""
    from .limits import RULES, check

    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(keys)}")
    out = {}
    for key, value in raw.items():
        if value in (None, ""):
            continue
        kind = keys[key]
        if isinstance(kind, tuple):  # a path or a list of paths
            paths = [value] if isinstance(value, str) else value
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
                raise ValueError(f"{where}: {key} must be a path or a list of paths, got {value!r}")
            out[key] = value
            continue
        if isinstance(value, str) and kind is not str:
            try:
                value = float(value) if kind is float else int(value)
            except ValueError:
                raise ValueError(f"{where}: {key} must be {kind.__name__}, got {value!r}") from None
        if kind is str and not isinstance(value, str):
            raise ValueError(f"{where}: {key} must be text, got {type(value).__name__}")
        if key in RULES:
            try:
                value = check(key, value, f"{where}: {key}")
            except UsageError as exc:
                raise ValueError(exc.message) from None
        out[key] = value
    if not str(out.get(required, "")).strip():
        raise ValueError(f"{where}: no {required}")
    return out


def read_prompts_file(path: Path) -> list[Entry]:
    """.txt (a prompt per line, # comments), .jsonl (objects) or .csv (a header with a prompt column)."""
    path = Path(path)
    text = read_input_text(path, "prompts file")
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
    text = read_input_text(Path(path), "edits file")
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


def reserve_output(item: Item, names: Reservations, pattern: str) -> Path:
    """Choose and reserve where an item's image goes: its own name from a file (kept inside the output
    folder) or the --name pattern's first free name."""
    if item.output:
        return names.named(item.output, f"line {item.line}: output" if item.line else "output")
    fields = dict(
        index=item.index, seed=item.seed, slug=slug(item.prompt), width=item.width, height=item.height
    )
    return names.pattern(render_name(pattern, **fields))


def codes_path(png: Path) -> Path:
    return png.with_name(png.stem + ".codes.json")


def read_codes_file(path: Path) -> dict:
    """A `.codes.json` llada wrote, checked whole before any model loads: a grid of two positive sides,
    exactly rows x columns integer codes, an optional integer seed."""
    from .limits import MAX_IMAGE_CODES, check

    where = codes_file_problem(path)
    try:
        saved = json.loads(read_input_text(Path(path), "codes file"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"{where} holds a JSON {type(saved).__name__}, not an object")
    grid, codes = saved.get("grid"), saved.get("codes")
    if not (isinstance(grid, list) and len(grid) == 2 and all(type(v) is int and v > 0 for v in grid)):
        raise UsageError(f"{where}: grid is {grid!r}, not [rows, columns] of positive integers")
    if grid[0] * grid[1] > MAX_IMAGE_CODES:
        raise UsageError(f"{where}: a {grid[0]}x{grid[1]} grid is more than {MAX_IMAGE_CODES} codes")
    if not isinstance(codes, list) or len(codes) != grid[0] * grid[1]:
        n = len(codes) if isinstance(codes, list) else type(codes).__name__
        raise UsageError(f"{where}: codes must be a list of {grid[0] * grid[1]} integers, got {n}")
    check_code_range(saved, 1 << 31, path)
    if saved.get("seed") is not None:
        check("seed", saved["seed"], f"{where}: seed")
    return saved


def codes_file_problem(path: Path) -> str:
    return f"not a llada codes file: {display_path(path)}"


def check_code_range(saved: dict, vocab: int, path: Path) -> None:
    """Every code an integer below the model's image vocabulary (known once the checkpoint is found)."""
    bad = next((c for c in saved["codes"] if type(c) is not int or not 0 <= c < vocab), None)
    if bad is not None:
        raise UsageError(f"{codes_file_problem(path)}: code {bad!r} is not an integer in [0, {vocab})")


class Manifest:
    """`manifest.jsonl`: one line per state change of an item (codes, done, failed); the last line wins.

    Paths are stored relative to the manifest's folder, so a batch resumed from another working folder
    finds its files. The batch's own line (its base seed) is written with the first item's, so a run that
    does nothing leaves no manifest."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.pending: dict | None = None  # the batch line, written before the first item's

    def load(self) -> dict[str, dict]:
        state: dict[str, dict] = {}
        if not self.path.exists():
            return state
        text = read_input_text(self.path, "manifest", limit=1 << 30)
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                state[record["id"]] = record
        return state

    def relative(self, path: Path) -> str:
        """How a file is named in the manifest: relative to its folder when inside it."""
        try:
            return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(self.path.parent)))
        except ValueError:
            return str(Path(path).absolute())

    def locate(self, record: dict, key: str) -> Path | None:
        """A path the manifest recorded; older manifests held paths relative to the working folder."""
        value = record.get(key)
        if not isinstance(value, str) or not value:
            return None
        recorded = Path(value)
        if recorded.is_absolute():
            return recorded
        inside = self.path.parent / recorded
        return inside if inside.exists() or not recorded.exists() else recorded

    def append(self, record: dict) -> None:
        lines = [self.pending, record] if self.pending else [record]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                for line in lines:
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except IsADirectoryError:
            raise UsageError(f"manifest {display_path(self.path)} is a folder") from None
        self.pending = None


def item_record(item: Item, state: str, **extra) -> dict:
    base = {k: v for k, v in asdict(item).items() if k not in ("extra", "error") and v is not None}
    return {"id": item.id, "state": state, **base, **extra}
