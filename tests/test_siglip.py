"""The SigLIP-VQ encoder's math: position resampling, the code search numerics, per-image attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llada_cli.checkpoint.components import load_image_tokenizer
from llada_cli.models.siglip_vq import nearest_codes, resample_positions


@pytest.mark.parametrize("gh, gw", [(7, 11), (32, 32), (50, 3), (1, 1)])
def test_position_resampling_equals_bilinear_interpolation(gh, gw):
    grid, d = 32, 6
    table = torch.randn(grid * grid, d)
    ours = resample_positions(table, grid, gh, gw)
    square = table.T.reshape(1, d, grid, grid)
    ref = F.interpolate(square, size=(gh, gw), mode="bilinear", align_corners=False)[0].reshape(d, -1).T
    assert torch.allclose(ours, ref, atol=1e-5)


def test_position_resampling_at_the_native_size_is_the_table():
    table = torch.randn(16 * 16, 4)
    assert torch.allclose(resample_positions(table, 16, 16, 16), table, atol=1e-6)


def test_nearest_code_is_the_most_similar_direction_and_ignores_length():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    z = torch.tensor([[10.0, 1.0], [0.1, 3.0], [-0.5, 0.4]])
    for numerics in ("bf16", "fp32"):
        assert nearest_codes(z, codebook, numerics).tolist() == [0, 1, 2]


def test_exact_ties_go_to_the_first_index():
    codebook = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    assert nearest_codes(torch.tensor([[2.0, 0.0]]), codebook, "fp32").tolist() == [1]


def test_near_tie_bf16_path_keeps_the_official_choice():
    # code 1 is nearer by a hair (cos 0.99995 vs 0.99990): fp32 sees it, bf16 distances round to a tie
    z = torch.tensor([[1.0, 0.0]])
    a, b = 0.99990, 0.99995
    codebook = torch.tensor([[a, (1 - a * a) ** 0.5], [b, (1 - b * b) ** 0.5]])
    assert nearest_codes(z, codebook, "fp32").tolist() == [1]
    assert nearest_codes(z, codebook, "bf16").tolist() == [0]


def test_images_in_one_batch_do_not_attend_to_each_other(tiny_dir):
    encoder = load_image_tokenizer(tiny_dir, "cpu", "fp32")
    assert not any(k.startswith("model.vqmodel.post_quant_conv") for k in encoder.state_dict())
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(6, 768, generator=g), (2, 3))
    b = (torch.randn(20, 768, generator=g), (4, 5))
    visual = encoder.model.visual
    together = visual(torch.cat([a[0], b[0]]), [a[1], b[1]])
    assert torch.allclose(together[:6], visual(a[0], [a[1]]), atol=1e-5)
    assert torch.allclose(together[6:], visual(b[0], [b[1]]), atol=1e-5)
    assert encoder.encode([a, b]) == encoder.encode([a]) + encoder.encode([b])
