"""Writing an interleaved document as it grows: frames as PNGs, `document.md` and `document.json`.

Both documents are rewritten atomically after every segment, so an interruption leaves a consistent
document of everything finished so far.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..io.files import atomic_write_text
from ..io.imagefiles import save_image
from .interleave import Segment


class DocumentWriter:
    def __init__(
        self,
        out_dir: Path,
        decoder,
        prompt: str,
        model: str,
        settings: dict,
        seed: int,
        decoder_steps: int | None = None,
        resolution_multiplier: int = 2,
    ):
        self.out_dir, self.decoder, self.prompt = Path(out_dir), decoder, prompt
        self.model, self.settings, self.seed = model, settings, seed
        self.decoder_steps, self.rm = decoder_steps, resolution_multiplier
        self.segments: list[dict] = []
        self.finish_reason = "interrupted"
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def add(self, segment: Segment, _full=None) -> dict:
        """Record a finished segment (decoding an image frame now) and rewrite the documents."""
        entry = (
            {"kind": segment.kind, "text": segment.text} if segment.kind != "image" else self._frame(segment)
        )
        self.segments.append(entry)
        self.save()
        return entry

    def _frame(self, segment: Segment) -> dict:
        h, w = segment.grid
        picture, timings = self.decoder.decode(segment.codes, h, w, segment.seed, self.decoder_steps, self.rm)
        name = f"frame-{segment.frame}.png"
        record = {
            "llada": __version__,
            "model": self.model,
            "prompt": self.prompt,
            "frame": segment.frame,
            "seed": segment.seed,
            "grid": [h, w],
            "settings": self.settings,
            "guidance": segment.guidance,
        }
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
            "seconds": {
                "codes": round(segment.seconds, 4),
                "decode": round(timings.decoder + timings.vae, 4),
            },
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
