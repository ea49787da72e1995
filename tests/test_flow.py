"""The decoder transport and the size rules of text-to-image."""

from __future__ import annotations

import pytest
import torch

from llada_cli.errors import UsageError
from llada_cli.limits import size_for_aspect
from llada_cli.pipelines.text2image import grid_for
from llada_cli.sampling.flow import guided, normal_grid, sample_normal, sample_turbo, turbo_grid


def test_normal_grid_is_the_shifted_50_point_grid():
    g = normal_grid(50)
    assert len(g) == 50 and g[0] == 0 and g[-1] == 1
    assert [round(v, 4) for v in g[:6].tolist()] == [0.0, 0.0035, 0.007, 0.0108, 0.0146, 0.0186]
    assert [round(v, 4) for v in g[-4:].tolist()] == [0.7188, 0.7966, 0.8889, 1.0]


def test_turbo_grid_is_even_without_shift():
    assert turbo_grid(8).tolist() == [k / 8 for k in range(9)]


def test_normal_sampler_evaluates_points_minus_one_times_never_at_one():
    seen = []

    def velocity(x, t):
        seen.append(t)
        return torch.ones_like(x)

    x = sample_normal(velocity, torch.zeros(1, 2), 50)
    assert len(seen) == 49 and max(seen) < 1.0
    assert torch.allclose(x, torch.ones(1, 2))  # the steps add up to t from 0 to 1


def test_turbo_sampler_returns_the_last_prediction_and_draws_noise_every_step():
    calls = []

    def velocity(x, t):
        calls.append(t)
        return torch.full_like(x, 2.0) - x  # data = x + (1 - t) v

    g = torch.Generator().manual_seed(0)
    out = sample_turbo(velocity, torch.zeros(1, 3), 8, g)
    assert calls == [k / 8 for k in range(8)]
    assert out.dtype == torch.float64
    # the last step lands on its prediction x + (1 - 7/8) * (2 - x)
    g2 = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 3, dtype=torch.float64)
    for k in range(8):
        t, t1 = k / 8, (k + 1) / 8
        data = x + (1 - t) * (2.0 - x)
        x = t1 * data + (1 - t1) * torch.randn(x.shape, generator=g2, dtype=torch.float64)
    assert torch.equal(out, x)


def test_guidance_with_norm_clamp():
    p = torch.tensor([[3.0, 0.0]])
    n = torch.tensor([[1.0, 0.0]])
    out = guided(p, n, 1.0)  # 2p - n = (5, 0), clamped back to |p| = 3
    assert torch.allclose(out, torch.tensor([[3.0, 0.0]]))
    small = guided(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.5]]), 1.0)  # norm shrinks: kept
    assert torch.allclose(small, torch.tensor([[1.0, 0.5]]))


@pytest.mark.parametrize(
    "w, h, rm, grid", [(1024, 1024, 2, (32, 32)), (512, 768, 2, (24, 16)), (256, 128, 1, (8, 16))]
)
def test_grid_from_size(w, h, rm, grid):
    assert grid_for(w, h, rm) == grid


@pytest.mark.parametrize(
    "w, h, hint", [(1000, 1024, "try width 992"), (1024, 0, "try height 32"), (33, 64, "try width 32")]
)
def test_sizes_off_the_grid_suggest_the_nearest(w, h, hint):
    with pytest.raises(UsageError) as err:
        grid_for(w, h)
    assert err.value.hint == hint


def test_aspect_ratio_sizes():
    assert size_for_aspect("1:1") == (1024, 1024)
    w, h = size_for_aspect("16:9")
    assert w % 32 == 0 and h % 32 == 0 and abs(w / h - 16 / 9) < 0.05 and abs(w * h - 2**20) < 0.08 * 2**20
    with pytest.raises(UsageError):
        size_for_aspect("wide")


@pytest.mark.parametrize("mode", ["turbo", "normal"])
def test_the_context_refiner_runs_once_per_picture_with_the_same_pixels(tiny_dir, monkeypatch, mode):
    """Issue 18.4: the refiner's input is the codes' features alone, so once per decode is exact."""
    import numpy as np

    from llada_cli.pipelines import decode as decode_module

    stack = decode_module.DecoderStack.load(tiny_dir, mode, "cpu", torch.float32)
    calls = []
    for layer in stack.decoder.context_refiner:
        layer.register_forward_hook(lambda *_: calls.append(1))
    codes, steps = [3, 1, 4, 1, 5, 9], 4
    once, _ = stack.decode(codes, 2, 3, seed=7, steps=steps)
    ran_once = len(calls)
    monkeypatch.setattr(decode_module, "REFINE_CONTEXT_ONCE", False)
    calls.clear()
    every, _ = stack.decode(codes, 2, 3, seed=7, steps=steps)
    evaluations = steps if mode == "turbo" else steps - 1
    layers = len(stack.decoder.context_refiner)
    assert ran_once == layers and len(calls) == layers * evaluations
    assert np.array_equal(np.asarray(once), np.asarray(every))
    assert isinstance(stack.decoder.context_refiner[0], type(stack.decoder.noise_refiner[0]))  # put back
