"""PNG files that carry their own generation record, written atomically.

Two text chunks: `parameters` in the A1111 layout that image viewers and other tools already read, and
`llada` holding the full JSON record (model, revision, every setting, seed, tool version), which
`--params-from` reads back.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from .errors import UsageError
from .io_utils import atomic_write_bytes

RECORD_KEY = "llada"


def a1111_parameters(record: dict) -> str:
    s = record.get("settings", {})
    fields = [
        f"Steps: {s.get('steps')}",
        "Sampler: LLaDA2 block diffusion",
        f"CFG scale: {s.get('cfg')}",
        f"Seed: {record.get('seed')}",
        f"Size: {record.get('width')}x{record.get('height')}",
        f"Model: {record.get('model')}",
        f"Decoder: {s.get('decoder')} ({s.get('decoder_steps')} steps)",
        f"Version: llada {record.get('llada')}",
    ]
    return f"{record.get('prompt', '')}\n" + ", ".join(fields)


def png_bytes(image, record: dict | None) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = None
    if record is not None:
        info = PngInfo()
        info.add_text("parameters", a1111_parameters(record))
        info.add_itxt(RECORD_KEY, json.dumps(record, ensure_ascii=False, sort_keys=True))
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def save_png(image, path: Path, record: dict | None) -> None:
    atomic_write_bytes(Path(path), png_bytes(image, record))


def read_record(path: Path) -> dict:
    """The JSON record of a PNG llada wrote; a clear error for any other file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            text = img.text.get(RECORD_KEY) if hasattr(img, "text") else None
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"--params-from {path}: cannot read it as a PNG ({exc})") from None
    if not text:
        raise UsageError(
            f"--params-from {path}: no llada generation record in this file",
            "only PNGs written by llada generate carry one (not with --no-metadata)",
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(f"--params-from {path}: its llada record is not valid JSON") from None
