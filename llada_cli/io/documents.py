"""Writing an interleaved document as it grows: frames as PNGs, `document.md` and `document.json`.

Both documents are rewritten atomically after every segment, so an interruption leaves a consistent
document of everything finished so far.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from .files import atomic_write_text
from .imagefiles import save_image


class DocumentWriter:
    """The files of one document; frames arrive decoded, with their generation record (a dict)."""

    def __init__(self, out_dir: Path, *, prompt: str, model: str, settings: dict, seed: int):
        self.out_dir, self.prompt, self.model = Path(out_dir), prompt, model
        self.settings, self.seed = settings, seed
        self.segments: list[dict] = []
        self.finish_reason = "interrupted"

    def add(self, segment, picture=None, record: dict | None = None, decode_seconds: float = 0.0) -> dict:
        """Record a finished segment (an image frame with its picture) and rewrite the documents."""
        if segment.kind == "image":
            entry = self._frame(segment, picture, record or {}, decode_seconds)
        else:
            entry = {"kind": segment.kind, "text": segment.text}
        self.segments.append(entry)
        self.save()
        return entry

    def _frame(self, segment, picture, record: dict, decode_seconds: float) -> dict:
        h, w = segment.grid
        name = f"frame-{segment.frame}.png"
        save_image(picture, self.out_dir / name, record)
        atomic_write_text(
            self.out_dir / f"frame-{segment.frame}.codes.json",
            json.dumps(record | {"codes": segment.codes}) + "\n",
        )
        return {
            "kind": "image",
            "frame": segment.frame,
            "path": name,
            "grid": [h, w],
            "seed": segment.seed,
            "width": picture.size[0],
            "height": picture.size[1],
            "guidance": segment.guidance,
            "seconds": {"codes": round(segment.seconds, 4), "decode": round(decode_seconds, 4)},
        }

    def markdown(self) -> str:
        parts = []
        for s in self.segments:
            if s["kind"] == "text":
                parts.append(s["text"])
            elif s["kind"] == "image":
                parts.append(f"\n\n![frame {s['frame']}]({s['path']})\n\n")
            else:
                parts.append(f"\n\n> **llada:** {s['text']}\n\n")
        return "".join(parts).strip() + "\n"

    def save(self) -> None:
        atomic_write_text(self.out_dir / "document.md", self.markdown())
        record = {
            "llada": __version__,
            "model": self.model,
            "prompt": self.prompt,
            "seed": self.seed,
            "settings": self.settings,
            "finish_reason": self.finish_reason,
            "segments": self.segments,
        }
        atomic_write_text(
            self.out_dir / "document.json", json.dumps(record, ensure_ascii=False, indent=2) + "\n"
        )
