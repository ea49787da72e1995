"""Image files that carry their own generation record, written atomically in the format their name asks.

PNG: two text chunks, `parameters` in the A1111 layout that image viewers and other tools already read,
and `llada` holding the full JSON record (model, revision, every setting, seed, tool version), which
`--params-from` reads back. JPEG and WebP: the same two in EXIF, the A1111 text as the UserComment (where
those tools look for it) and the JSON record as the ImageDescription.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import UsageError
from .files import MiB, atomic_write_bytes, display_path, read_input_bytes
from .outputs import image_format

RECORD_KEY = "llada"
JPEG_QUALITY = 95  # JPEG and lossy WebP: near-lossless for generated pictures
EXIF_DESCRIPTION, EXIF_USER_COMMENT, EXIF_IFD = 0x010E, 0x9286, 0x8769


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


def exif_bytes_image(image, fmt: str, record: dict | None) -> bytes:
    """JPEG or WebP bytes with the record in EXIF (ASCII JSON: ImageDescription is an ASCII field)."""
    from PIL import Image

    exif = Image.Exif()
    if record is not None:
        exif[EXIF_DESCRIPTION] = json.dumps(record, ensure_ascii=True, sort_keys=True)
        text = a1111_parameters(record)
        exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"UNICODE\0" + text.encode("utf-16-le")
    buf = io.BytesIO()
    image.convert("RGB").save(buf, fmt, exif=exif, quality=JPEG_QUALITY)
    return buf.getvalue()


def save_image(image, path: Path, record: dict | None) -> None:
    """Write `image` as its name's format (.png, .jpg/.jpeg, .webp) with the record, atomically."""
    fmt = image_format(path)
    data = png_bytes(image, record) if fmt == "PNG" else exif_bytes_image(image, fmt, record)
    atomic_write_bytes(Path(path), data)


def _record_text(img) -> str | None:
    if img.format == "PNG":
        return getattr(img, "text", {}).get(RECORD_KEY)
    description = img.getexif().get(EXIF_DESCRIPTION)
    return description.decode("ascii", "replace") if isinstance(description, bytes) else description


def read_record(path: Path) -> dict:
    """The JSON record of an image llada wrote; a clear error for any other file."""
    from PIL import Image, UnidentifiedImageError

    data = read_input_bytes(Path(path), "--params-from", 512 * MiB)
    try:
        with Image.open(io.BytesIO(data)) as img:
            text = _record_text(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UsageError(f"--params-from {display_path(path)}: cannot read it as an image ({exc})") from None
    if not text:
        raise UsageError(
            f"--params-from {path}: no llada generation record in this file",
            "only PNGs written by llada generate carry one (not with --no-metadata)",
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(f"--params-from {path}: its llada record is not valid JSON") from None
    if not isinstance(record, dict):
        raise UsageError(f"--params-from {path}: its llada record is not a JSON object")
    return record
