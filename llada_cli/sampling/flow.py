"""The decoder's flow-matching transport: time grids, guidance with the norm clamp, Euler and turbo steps.

Time runs from noise (t = 0) to data (t = 1); the model predicts the velocity towards data. Normal mode
integrates Euler over a 50-point grid shifted by 6 (49 evaluations, guidance against zero conditioning);
turbo mode takes even steps without shift, re-noising fully after each prediction. All noise is drawn on the
CPU from the caller's generator, so a seed gives the same picture on any device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TIME_SHIFT = 6.0
Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def normal_grid(points: int, shift: float = TIME_SHIFT) -> torch.Tensor:
    """`points` times from 0 to 1 (endpoints included), shifted towards 0: t / (t + s - s t)."""
    t = torch.linspace(0, 1, points, dtype=torch.float32)
    return t / (t + shift - shift * t)


def turbo_grid(steps: int) -> torch.Tensor:
    """steps + 1 even times from 0 to 1 (float32, no shift), as the official turbo branch ends up using."""
    return torch.linspace(0, 1, steps + 1, dtype=torch.float64).to(torch.float32)


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """p + s (p - n), scaled back to the norm of p whenever it grows beyond it (per sample)."""
    pred = cond + scale * (cond - uncond)
    dims = tuple(range(1, cond.dim()))
    norm_p = torch.linalg.vector_norm(cond, dim=dims, keepdim=True)
    norm_pred = torch.linalg.vector_norm(pred, dim=dims, keepdim=True)
    factor = torch.where(norm_pred > norm_p, norm_p / norm_pred.clamp(min=1e-12), torch.ones_like(norm_p))
    return pred * factor


def sample_normal(
    velocity: Velocity, x: torch.Tensor, points: int, on_step: Callable[[int, int], None] | None = None
) -> torch.Tensor:
    """Euler over the shifted grid: points - 1 evaluations, never at t = 1. State in float32."""
    grid = normal_grid(points).tolist()
    x = x.float()
    for i in range(points - 1):
        x = x + (grid[i + 1] - grid[i]) * velocity(x, grid[i]).float()
        if on_step:
            on_step(i + 1, points - 1)
    return x


def sample_turbo(
    velocity: Velocity,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Predict the data, re-noise completely to the next time; the last step returns the prediction.

    Noise is drawn every step, the last one included, as the official code does (the draw order matters
    for reproducing its pictures from a seed). State in float64."""
    grid = turbo_grid(steps).tolist()
    x = x.double()
    for k in range(steps):
        t, t_next = grid[k], grid[k + 1]
        v = velocity(x, t).double()
        data = x + (1 - t) * v
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
        x = t_next * data + (1 - t_next) * noise
        if on_step:
            on_step(k + 1, steps)
    return x
