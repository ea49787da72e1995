"""Opening user images safely: clear errors for anything that is not a usable picture.

Every failure is a `BadInput` naming the file: missing, a folder, unreadable, empty, not an image, truncated,
or so large in its header that decoding it would exhaust memory (checked before any pixel is decoded).
CMYK, 16-bit, palette and grey images are converted to RGB; a picture with transparent pixels is kept as
RGBA until `flatten_alpha` decides what reaches the model (ALPHA_MODES); an animated image gives its first
frame, and says so.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

MAX_INPUT_PIXELS = 8192 * 8192  # larger headers are refused before decoding (decompression bombs)
MAX_INPUT_BYTES = 256 << 20  # an image file larger than this is refused before it is read
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")

# What a transparent picture shows the model. "drop" is the official behaviour: every official caller
# opens pictures with `Image.open(path).convert("RGB")`, which discards alpha and keeps whatever colour
# the file stores under transparent pixels (often black). "white" and "black" composite on that colour.
ALPHA_MODES = ("drop", "white", "black")
DEFAULT_ALPHA = "drop"


class BadInput(UsageError):
    """An input file the tool cannot use; exit code 2 like any other usage error."""


@dataclass
class LoadedImage:
    image: object  # PIL.Image.Image: RGB, or RGBA when some pixel is not opaque
    source: str
    sha256: str
    animated: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def transparent(self) -> bool:
        return self.image.mode == "RGBA"

    def record(self) -> dict:
        """What a record says of a source before it is encoded (a server's run, say)."""
        return {"source": self.source, "sha256": self.sha256, "original_size": list(self.size)}

    def rgb(self, alpha: str = DEFAULT_ALPHA):
        """The picture as the model will see it: RGB, transparency handled as `alpha` says."""
        return flatten_alpha(self.image, alpha)


def read_source(source: str, stdin_bytes: bytes | None = None) -> bytes:
    """The bytes of a path, or of stdin for `-`; URLs are refused (no network), and so are folders,
    devices, FIFOs and files over MAX_INPUT_BYTES."""
    from .files import read_input_bytes

    if source.startswith(("http://", "https://", "ftp://")):
        raise BadInput(
            f"{source} is a URL; llada does not fetch from the network",
            "download the image and pass its path",
        )
    if source == "-":
        if stdin_bytes is None:
            raise BadInput("`-` means an image on stdin, but stdin is not available")
        data = stdin_bytes
    else:
        try:
            data = read_input_bytes(Path(source).expanduser(), "image", MAX_INPUT_BYTES)
        except UsageError as exc:
            raise BadInput(exc.message, exc.hint) from None
    if not data:
        raise BadInput(f"image {source} is empty (0 bytes)")
    return data


def read_stdin_image() -> bytes:
    """An image piped on stdin, at most MAX_INPUT_BYTES (a stream that never ends is refused)."""
    import sys

    data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise BadInput(f"the image on stdin is more than {MAX_INPUT_BYTES >> 20} MiB")
    return data


def open_image(data: bytes, source: str) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own check below names the size
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadInput(
            f"{source} is not an image llada can read", "use PNG, JPEG, WebP, GIF, BMP or TIFF"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"{source} is damaged or truncated ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    w, h = img.size
    if w * h > MAX_INPUT_PIXELS or w < 1 or h < 1:
        raise BadInput(
            f"{source} is {w}x{h} pixels, more than llada decodes ({MAX_INPUT_PIXELS:,} pixels)",
            "scale it down first",
        )
    animated = bool(getattr(img, "is_animated", False))
    try:
        img.seek(0)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(f"{source} is damaged or truncated ({exc})") from None
    return LoadedImage(to_rgb(img), source, hashlib.sha256(data).hexdigest(), animated)


def to_rgb(img):
    """RGB for any mode, or RGBA when the picture has a pixel that is not opaque: 16-bit scaled to 8-bit,
    CMYK/palette/grey converted; the alpha channel is left for `flatten_alpha`."""
    if img.mode.startswith("I;16"):
        img = img.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    elif img.mode in ("I", "F"):
        high = max(img.getextrema()[1], 1)
        img = img.point(lambda v: v * (255 / high if high > 255 else 1)).convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            return rgba
    return img.convert("RGB")


def flatten_alpha(img, alpha: str = DEFAULT_ALPHA):
    """RGB from RGB or RGBA: "drop" discards alpha (the official `convert("RGB")`), "white"/"black"
    composite the picture on that colour."""
    from PIL import Image

    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, not {alpha!r}")
    if img.mode != "RGBA" or alpha == "drop":
        return img.convert("RGB")
    colour = (255, 255, 255, 255) if alpha == "white" else (0, 0, 0, 255)
    return Image.alpha_composite(Image.new("RGBA", img.size, colour), img).convert("RGB")


def load_image(source: str, stdin_bytes: bytes | None = None) -> LoadedImage:
    return open_image(read_source(source, stdin_bytes), source)


def split_image_paths(text: str) -> tuple[str, list[str]]:
    """Words of a typed message that name existing image files (quotes allowed), and the text without them."""
    import re

    found: list[str] = []

    def take(match: re.Match) -> str:
        word = match.group(0)
        path = Path(word.strip("'\"")).expanduser()
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(str(path))
            return ""
        return word

    rest = re.sub(r"\"[^\"]+\"|'[^']+'|\S+", take, text)
    return " ".join(rest.split()) if found else text, found
