"""SigVQ: the decoder-side embedding of image codes (`image_tokenizer/sigvq_embedding.pt`).

The file has no config; its two sizes are read off the tensors (the official code hard-codes 16384 codes
and width 4096, which is what the real file holds).
"""

from __future__ import annotations

from dataclasses import dataclass

from .tensors import TensorSpec, TensorSpecs

EMBEDDING_KEY = "prior_token_embedding.weight"


@dataclass(frozen=True)
class SigVQConfig:
    vocab_size: int
    inner_dim: int

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> SigVQConfig:
        vocab, width = shapes[EMBEDDING_KEY]
        return cls(vocab, width)


def sigvq_manifest(cfg: SigVQConfig) -> TensorSpecs:
    d = cfg.inner_dim
    dt = ("BF16", "F32")
    return {
        EMBEDDING_KEY: TensorSpec((cfg.vocab_size, d), dt),
        "prior_projector.net.0.proj.weight": TensorSpec((d, d), dt),
        "prior_projector.net.0.proj.bias": TensorSpec((d,), dt),
        "prior_projector.net.2.weight": TensorSpec((d, d), dt),
        "prior_projector.net.2.bias": TensorSpec((d,), dt),
    }


import torch  # noqa: E402  (the config half above stays importable without torch)
from torch import nn  # noqa: E402


class SigVQ(nn.Module):
    """Image code -> conditioning vector for the decoder: embedding, then Linear-SiLU-Linear (width kept)."""

    def __init__(self, cfg: SigVQConfig):
        super().__init__()
        d = cfg.inner_dim
        self.prior_token_embedding = nn.Embedding(cfg.vocab_size, d)
        self.prior_projector = nn.Module()
        first = nn.Module()
        first.proj = nn.Linear(d, d)
        self.prior_projector.net = nn.ModuleList([first, nn.SiLU(), nn.Linear(d, d)])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        net = self.prior_projector.net
        return net[2](net[1](net[0].proj(self.prior_token_embedding(ids))))
