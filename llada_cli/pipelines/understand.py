"""Images for the model: transparency, preprocessing, SigLIP-VQ codes, and a memory of them.

The encoder loads on the first image only, can be released after each use (`low_memory`), and caches codes
by the file's content hash (and the resize budget, which depends on how many images share a turn), so
asking several questions about one picture encodes it once. Its precision (bf16, the official one, on every
device) and its treatment of transparent pixels (dropped alpha, as the official code does) are its own
settings, recorded with every image.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..inputs.preprocess import PreprocessorConfig, prepare_for_understanding, to_patches
from ..inputs.prompts import ImageBlock
from ..io.images import DEFAULT_ALPHA, LoadedImage
from ..runtime.device import memory_guard

CACHED_IMAGES = 256  # codes kept for pictures seen again (the REPL's, a server's repeat uploads)


@dataclass(frozen=True)
class EncodedImage:
    source: str
    sha256: str
    original_size: tuple[int, int]  # (width, height) as given
    size: tuple[int, int]  # (width, height) after the understanding resize and crop
    grid: tuple[int, int]  # (rows, columns) of 16-px patches
    codes: tuple[int, ...]
    animated: bool = False
    precision: str = "bf16"  # the image tokenizer's arithmetic (siglip_vq.PRECISIONS)
    alpha: str | None = None  # what was done with transparent pixels; None: the picture was opaque

    @property
    def block(self) -> ImageBlock:
        return ImageBlock(self.grid[0], self.grid[1], self.codes)

    def record(self) -> dict:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "original_size": list(self.original_size),
            "size": list(self.size),
            "grid": list(self.grid),
            "tokens": len(self.codes),
            "first_frame_of_animation": self.animated,
            "image_tokenizer_precision": self.precision,
            "transparency": self.alpha,
        }

    def describe(self) -> str:
        (w0, h0), (w, h) = self.original_size, self.size
        return (
            f"image {self.source}: {w0}x{h0} -> {w}x{h}, grid {self.grid[0]}x{self.grid[1]} = "
            f"{len(self.codes)} tokens" + (" (first frame of an animation)" if self.animated else "")
        )


class ImageEncoder:
    def __init__(
        self,
        root: Path,
        device: str,
        *,
        precision: str = "bf16",
        alpha: str = DEFAULT_ALPHA,
        low_memory: bool = False,
    ):
        self.root, self.device = Path(root), device
        self.precision, self.alpha, self.low_memory = precision, alpha, low_memory
        self.preprocessor = PreprocessorConfig.load(
            self.root / "image_tokenizer" / "preprocessor_config.json"
        )
        self.model = None
        self.cache: OrderedDict[tuple, EncodedImage] = OrderedDict()  # the last CACHED_IMAGES used
        self.encoder_runs = 0

    def encode(self, images: list[LoadedImage], prepare=None, tag=None) -> list[EncodedImage]:
        """Codes for each image; `prepare` maps a picture to the encoder's input size (default: the
        understanding resize for this many images) and `tag` names that choice in the cache key."""
        if prepare is None:
            n = len(images)
            prepare, tag = (lambda img: prepare_for_understanding(img, n)), ("understand", n == 1)
        keys = [(img.sha256, tag, self.precision, self.alpha) for img in images]
        todo = [(img, key) for img, key in zip(images, keys, strict=True) if key not in self.cache]
        if todo:
            self._encode(todo, prepare)
        found = [self.cache[key] for key in keys]
        for key in keys:
            self.cache.move_to_end(key)
        while len(self.cache) > CACHED_IMAGES:  # a server meets new pictures for as long as it runs
            self.cache.popitem(last=False)
        return found

    def _encode(self, todo: list, prepare) -> None:
        from ..checkpoint.components import load_image_tokenizer

        if self.model is None:
            with memory_guard("loading the image tokenizer"):
                self.model = load_image_tokenizer(self.root, self.device, self.precision)
        for img, _ in todo:
            if img.transparent:
                logging.getLogger("llada.image").warning("%s", transparency_note(img.source, self.alpha))
        prepared = [prepare(img.rgb(self.alpha)) for img, _ in todo]
        patches = [to_patches(p, self.preprocessor) for p in prepared]
        with memory_guard("image tokenizer"):
            codes = self.model.encode(patches)
        self.encoder_runs += 1
        for (img, key), pic, (_, grid), c in zip(todo, prepared, patches, codes, strict=True):
            self.cache[key] = EncodedImage(
                img.source,
                img.sha256,
                img.size,
                pic.size,
                grid,
                tuple(c),
                img.animated,
                self.precision,
                self.alpha if img.transparent else None,
            )
        if self.low_memory:
            self.release()

    def release(self) -> None:
        """Drop the encoder's weights (about 2.4 GB for the real one); codes stay cached."""
        self.model = None
        from ..runtime.device import empty_cache

        empty_cache()


def transparency_note(source: str, alpha: str) -> str:
    """One line for stderr: what a transparent picture became."""
    done = {
        "drop": "alpha dropped, keeping the colours stored under transparent pixels, as the official code does",
        "white": "composited on white",
        "black": "composited on black",
    }[alpha]
    hint = "; --alpha white composites it on white" if alpha == "drop" else ""
    return f"image {source} has transparent pixels: {done}{hint}"
