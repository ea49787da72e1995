"""Classifier-free guidance combiners over stacked rows [R, L, V] -> [L, V]."""

from __future__ import annotations

import torch


def simple(scale: float):
    """Rows (cond, uncond): u + s * (c - u). Text-to-image, thinking phase 2, first interleaved frame."""

    def combine(rows: torch.Tensor) -> torch.Tensor:
        c, u = rows[0], rows[1]
        return u + scale * (c - u)

    return combine


def three_way(text_scale: float, image_scale: float):
    """Rows (cond, no_text, no_image): u + s_t * (c - u) + s_i * (u - u_img). Editing."""

    def combine(rows: torch.Tensor) -> torch.Tensor:
        c, u, ui = rows[0], rows[1], rows[2]
        return u + text_scale * (c - u) + image_scale * (u - ui)

    return combine
