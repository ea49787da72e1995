"""Understanding preprocessing: the official resize arithmetic, crop, normalisation and patch order."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from llada_cli.errors import ConfigError
from llada_cli.inputs.preprocess import (
    PreprocessorConfig,
    prepare_for_understanding,
    resize_and_center_crop,
    smart_resize,
    to_patches,
    understanding_size,
)
from llada_cli.weights import real_configs


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((1080, 1920), (576, 1056)),
        ((3000, 4000), (672, 896)),
        ((100, 100), (128, 128)),
        ((801, 801), (800, 800)),
        ((600, 800), (608, 800)),
    ],
)
def test_single_image_sizes_from_the_spec(hw, expected):
    assert understanding_size(*hw, n_images=1) == expected


def test_several_images_use_the_smaller_budget():
    # 800 * sqrt(448² / 800²) is 447.99999999999994 in floating point, so the official floor gives 13 x 32
    assert understanding_size(800, 800, n_images=2) == (416, 416)
    assert understanding_size(800, 800, n_images=1) == (800, 800)
    assert understanding_size(1080, 1920, n_images=3) == (320, 576)


def test_round_half_even_decides_like_python():
    # 48/32 = 1.5 rounds up to 2, 80/32 = 2.5 rounds down to 2; 16/32 = 0.5 rounds to 0, then one factor
    assert smart_resize(48, 80, 32, 32 * 32, 10**9) == (64, 64)
    assert smart_resize(16, 16, 32, 1, 10**9) == (32, 32)


def test_resize_to_cover_then_centre_crop():
    img = Image.new("RGB", (1920, 1080))
    out = prepare_for_understanding(img, 1)
    assert out.size == (1056, 576)
    # a non-uniform image: the crop keeps the centre
    img = Image.new("RGB", (150, 110), (0, 0, 0))
    img.paste((255, 255, 255), (65, 0, 85, 110))
    out = resize_and_center_crop(img, 64, 96)  # cover scale 0.64 -> 96x70, centre crop to 96x64
    assert (
        out.size == (96, 64)
        and out.getpixel((48, 32)) == (255, 255, 255)
        and out.getpixel((5, 32)) == (0, 0, 0)
    )


def patch_colored_image(gh: int, gw: int, p: int = 16) -> Image.Image:
    img = Image.new("RGB", (gw * p, gh * p))
    for y in range(gh):
        for x in range(gw):
            img.paste((y * 10, x * 10, 7), (x * p, y * p, (x + 1) * p, (y + 1) * p))
    return img


def test_patches_are_raster_ordered_and_laid_out_channel_y_x():
    cfg = PreprocessorConfig.from_dict(real_configs.PREPROCESSOR)
    img = patch_colored_image(3, 4)
    img.putpixel((16 * 2 + 5, 16 * 1 + 3), (255, 0, 0))  # one marked pixel: patch (1, 2), y 3, x 5
    rows, grid = to_patches(img, cfg)
    assert grid == (3, 4) and rows.shape == (12, 768)
    raw = (rows * 0.5 + 0.5) * 255  # undo normalise (mean = std = 0.5) and rescale
    for i in range(12):
        y, x = divmod(i, 4)
        assert round(float(raw[i, 0])) == y * 10 and round(float(raw[i, 256])) == x * 10
    marked = raw[1 * 4 + 2].view(3, 16, 16)
    assert round(float(marked[0, 3, 5])) == 255 and round(float(marked[1, 3, 5])) == 0


def test_normalisation_uses_the_config_mean_and_std():
    cfg = PreprocessorConfig.from_dict(
        {**real_configs.PREPROCESSOR, "image_mean": [0, 0, 0], "image_std": [1, 2, 4]}
    )
    rows, _ = to_patches(Image.new("RGB", (16, 16), (255, 255, 255)), cfg)
    assert torch.allclose(rows.view(3, 256)[:, 0], torch.tensor([1.0, 0.5, 0.25]))


def test_missing_mean_is_a_clear_error():
    raw = dict(real_configs.PREPROCESSOR)
    del raw["image_std"]
    with pytest.raises(ConfigError, match="image_std"):
        PreprocessorConfig.from_dict(raw)


def test_merge_size_two_groups_patches_in_2x2_blocks():
    cfg = PreprocessorConfig.from_dict({**real_configs.PREPROCESSOR, "merge_size": 2})
    rows, _ = to_patches(patch_colored_image(2, 4), cfg)
    raw = (rows * 0.5 + 0.5) * 255
    order = [(round(float(raw[i, 0])) // 10, round(float(raw[i, 256])) // 10) for i in range(8)]
    assert order == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
