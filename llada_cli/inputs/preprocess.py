"""Image preprocessing for the SigLIP-VQ encoder, exactly as the official code does it.

Understanding: `smart_resize` (factor 32; one image within [128², 800²] pixels, several within
[128², 448²]; Python's round-half-even, math.floor and math.ceil), resize-to-cover with PIL bicubic, centre
crop. Then rescale and normalise with the mean/std of `preprocessor_config.json`, and cut 16-px patches whose
rows are laid out (channel, y, x), in raster order of the patch grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.config_base import config_from_dict, read_json

UNDERSTAND_FACTOR = 32  # patch 16 x merge 2, fixed in the official resize whatever the config says
SINGLE_IMAGE_PIXELS = (128 * 128, 800 * 800)
MULTI_IMAGE_PIXELS = (128 * 128, 448 * 448)


def smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Nearest multiple-of-`factor` size within the pixel budget, keeping the aspect ratio."""
    hb = max(round(h / factor) * factor, factor)
    wb = max(round(w / factor) * factor, factor)
    if hb * wb > max_pixels:
        s = math.sqrt(max_pixels / (h * w))
        hb = max(math.floor(h * s / factor) * factor, factor)
        wb = max(math.floor(w * s / factor) * factor, factor)
    elif hb * wb < min_pixels:
        s = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * s / factor) * factor
        wb = math.ceil(w * s / factor) * factor
    return hb, wb


def understanding_size(h: int, w: int, n_images: int) -> tuple[int, int]:
    lo, hi = SINGLE_IMAGE_PIXELS if n_images == 1 else MULTI_IMAGE_PIXELS
    return smart_resize(h, w, UNDERSTAND_FACTOR, lo, hi)


def resize_and_center_crop(img, target_h: int, target_w: int, factor: int = UNDERSTAND_FACTOR):
    """Scale to cover the target with bicubic, then crop the centre (PIL pads black past the edge)."""
    from PIL import Image

    w, h = img.size
    scale = max(target_h / h, target_w / w)
    new_w, new_h = round(w * scale), round(h * scale)
    img = img.resize((new_w, new_h), Image.BICUBIC)
    crop_h = max(math.floor(new_h / factor) * factor, target_h)
    crop_w = max(math.floor(new_w / factor) * factor, target_w)
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    return img.crop((left, top, left + crop_w, top + crop_h))


def prepare_for_understanding(img, n_images: int):
    w, h = img.size
    th, tw = understanding_size(h, w, n_images)
    return resize_and_center_crop(img, th, tw)


@dataclass
class PreprocessorConfig:
    image_mean: list[float]
    image_std: list[float]
    patch_size: int = 16
    temporal_patch_size: int = 1
    merge_size: int = 1
    do_rescale: bool = True
    do_normalize: bool = True
    rescale_factor: float = 1 / 255

    def __post_init__(self) -> None:
        if self.temporal_patch_size != 1:
            raise ValueError("temporal_patch_size must be 1 for still images")

    @classmethod
    def load(cls, path: Path) -> PreprocessorConfig:
        return cls.from_dict(read_json(path), str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "preprocessor_config.json") -> PreprocessorConfig:
        for key in ("image_mean", "image_std"):
            if key not in raw:
                raise ConfigError(
                    f"{source} lacks {key}; the official code would silently use CLIP's values",
                    "re-run `llada download MODEL`",
                )
        return config_from_dict(cls, raw, source)


def to_patches(img, cfg: PreprocessorConfig):
    """RGB image (sides multiples of the patch) -> (rows [N, 3*p*p] float32, (grid_h, grid_w)).

    Rows follow the official reshape: grid cells in raster order (2x2 groups first when merge_size is 2),
    each row laid out (channel, y, x)."""
    import torch
    from PIL import Image

    if not isinstance(img, Image.Image) or img.mode != "RGB":
        raise TypeError("to_patches expects an RGB PIL image")
    w, h = img.size
    p, m = cfg.patch_size, cfg.merge_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"image {w}x{h} is not a multiple of {p * m} pixels")
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1).float()
    if cfg.do_rescale:
        x = x * cfg.rescale_factor
    if cfg.do_normalize:
        mean = torch.tensor(cfg.image_mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(cfg.image_std, dtype=torch.float32)[:, None, None]
        x = (x - mean) / std
    gh, gw = h // p, w // p
    x = x.view(3, gh // m, m, p, gw // m, m, p)  # c, bh, mh, py, bw, mw, px
    x = x.permute(1, 4, 2, 5, 0, 3, 6)  # bh, bw, mh, mw, c, py, px
    return x.reshape(gh * gw, 3 * p * p).contiguous(), (gh, gw)


# --- editing: the official crop-size list and aspect choice ------------------------------------------------

EDIT_PATCH = 32  # crop sizes are multiples of 32 px (16-px codes, decoded at twice the size)
EDIT_MAX_RATIO = 4.0


def crop_size_list(budget: int = 512, patch: int = EDIT_PATCH, max_ratio: float = EDIT_MAX_RATIO):
    """(width, height) pairs of about budget² pixels, multiples of `patch`, aspect at most `max_ratio`."""
    num_patches = (budget // patch) ** 2
    wp, hp, sizes = num_patches, 1, []
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch, hp * patch))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return sizes


def choose_crop_size(width: int, height: int, sizes) -> tuple[int, int]:
    """The size whose aspect is most like the image's (ties: the larger size), as `var_center_crop` picks."""
    scored = [(min(cw / width, ch / height) / max(cw / width, ch / height), (cw, ch)) for cw, ch in sizes]
    return sorted(scored, reverse=True)[0][1]


def edit_crop(img, budget: int = 512, fit: bool = False):
    """The source of an edit. Official (`fit=False`): the centre cw x ch window at native resolution (a
    large photo loses its surroundings, a small one is padded with black). `fit=True` first scales the image
    to cover cw x ch, so the whole picture is kept up to the aspect difference."""
    from PIL import Image

    w, h = img.size
    cw, ch = choose_crop_size(w, h, crop_size_list(budget))
    if fit:
        scale = max(cw / w, ch / h)
        img = img.resize((max(cw, round(w * scale)), max(ch, round(h * scale))), Image.BICUBIC)
        w, h = img.size
    left, top = max(0, (w - cw) // 2), max(0, (h - ch) // 2)
    return img.crop((left, top, left + cw, top + ch)).resize((cw, ch), Image.LANCZOS)
