"""`manifest.jsonl`: a batch's state, one line per change of an item, appended and flushed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError
from .files import display_path, read_input_text

MANIFEST = "manifest.jsonl"


class BatchManifest:
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
