"""Prompt, edits and codes files: read as UTF-8 (with or without a byte-order mark), each line checked.

A bad line fails only its own item (with its line number); every field goes through the rule of its flag
(llada_cli.limits). A codes file is checked whole before any model loads.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .files import display_path, read_input_text

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


@dataclass
class Entry:
    """One prompt from the command line or a file, before expansion by -n."""

    fields: dict
    line: int | None = None
    error: str | None = None


def _check_fields(raw: dict, where: str, keys: dict = ITEM_KEYS, required: str = "prompt") -> dict:
    """A file line's fields, each through the same rule as its flag (llada_cli.limits)."""
    from ..limits import RULES, check

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


def read_codes_file(path: Path) -> dict:
    """A `.codes.json` llada wrote, checked whole before any model loads: a grid of two positive sides,
    exactly rows x columns integer codes, an optional integer seed."""
    from ..limits import MAX_IMAGE_CODES, check

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
