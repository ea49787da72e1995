"""Image codes -> pixels: SigVQ conditioning, the Z-Image decoder's flow transport, the FLUX VAE.

Loaded once and kept for a whole batch. The decoder runs in one of two modes: `turbo` (the distilled
`decoder-turbo/`, 8 even steps, no guidance) or `normal` (`decoder/`, 50 shifted grid points, guidance 1.0
against zero conditioning with the norm clamp).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint.layout import DECODERS
from ..runtime.device import memory_guard
from ..sampling.flow import guided, sample_normal, sample_turbo
from ..settings import DEFAULT_DECODER_STEPS

NORMAL_GUIDANCE = 1.0  # the official decoder's cfg_scale (weight 2 on the conditional prediction)
CODE_UPSAMPLE = 2  # each code conditions a 2x2 patch of the decoder's token grid
LATENT_CHANNELS = 16
# The Z-Image context refiner sees only the codes' features (no timestep modulation), so every step of a
# decode gives it the same input: run it once per picture and reuse its output (True), or every step.
REFINE_CONTEXT_ONCE = True


@dataclass
class DecodeTimings:
    sigvq: float = 0.0
    decoder: float = 0.0
    vae: float = 0.0
    decoder_evaluations: int = 0


class DecoderStack:
    def __init__(self, sigvq, decoder, vae, mode: str, device: str, dtype):
        self.sigvq, self.decoder, self.vae = sigvq, decoder, vae
        self.mode, self.device, self.dtype = mode, device, dtype

    @classmethod
    def load(
        cls, root: Path, mode: str, device: str, dtype, quant: str = "none", offload: bool = False
    ) -> DecoderStack:
        """`offload`: the decoder stays in host RAM and accelerate moves each block's weights to `device`
        for its forward (for a GPU too small to hold it; the memory plan decides)."""
        from ..checkpoint.components import load_decoder, load_sigvq, load_vae

        sigvq = load_sigvq(Path(root), device, dtype)
        width = sigvq.prior_token_embedding.weight.shape[1]
        where = "cpu" if offload else device
        decoder = load_decoder(Path(root), DECODERS[mode], where, dtype, cap_feat_dim=width, quant=quant)
        if offload:
            from accelerate import cpu_offload

            # buffers too: packed weights (llada_cli.runtime.quant) are buffers and must stream like parameters
            cpu_offload(decoder, execution_device=torch.device(device), offload_buffers=True)
        return cls(sigvq, decoder, load_vae(Path(root), device, dtype), mode, device, dtype)

    @property
    def code_vocab(self) -> int:
        return self.sigvq.prior_token_embedding.weight.shape[0]

    @torch.no_grad()
    def conditioning(self, codes: list[int], h: int, w: int) -> torch.Tensor:
        """Codes (row-major h x w) -> nearest x2 upsampled grid -> SigVQ features [4hw, width]."""
        grid = torch.tensor(codes, dtype=torch.float32).view(1, 1, h, w)
        ids = F.interpolate(grid, scale_factor=CODE_UPSAMPLE, mode="nearest").long().flatten()
        return self.sigvq(ids.to(self.device)).to(self.dtype)

    def _velocity(self, cap: torch.Tensor, guidance: bool):
        caps = [cap, torch.zeros_like(cap)] if guidance else [cap]

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            latent = x.to(self.dtype)
            xs = [latent[0]] * len(caps)
            ts = torch.full((len(caps),), float(t), device=self.device)
            out = torch.stack([o.float() for o in self.decoder(xs, ts, caps, return_dict=False)[0]])
            return guided(out[:1], out[1:], NORMAL_GUIDANCE) if guidance else out

        return velocity

    @torch.no_grad()
    def decode(
        self,
        codes: list[int],
        h: int,
        w: int,
        seed: int,
        steps: int | None = None,
        resolution_multiplier: int = 2,
        on_step=None,
    ):
        """-> (PIL image of (16*rm*w) x (16*rm*h) pixels, timings)."""
        if len(codes) != h * w:
            raise ValueError(f"a {h}x{w} grid needs {h * w} codes, got {len(codes)}")
        if not all(0 <= c < self.code_vocab for c in codes):
            raise ValueError(f"image codes must lie in [0, {self.code_vocab})")
        steps = steps or DEFAULT_DECODER_STEPS[self.mode]
        timings = DecodeTimings()
        start = time.perf_counter()
        cap = self.conditioning(codes, h, w)
        timings.sigvq = time.perf_counter() - start

        generator = torch.Generator().manual_seed(seed)
        lh, lw = 2 * h * resolution_multiplier, 2 * w * resolution_multiplier  # latent = pixels / 8
        noise = torch.randn((1, LATENT_CHANNELS, 1, lh, lw), generator=generator).to(self.device)
        _sync(cap)
        start = time.perf_counter()
        with memory_guard("decoder"), _context_refined_once(self.decoder):
            if self.mode == "turbo":
                latents = sample_turbo(self._velocity(cap, False), noise, steps, generator, on_step)
                timings.decoder_evaluations = steps
            else:
                latents = sample_normal(self._velocity(cap, True), noise, steps, on_step)
                timings.decoder_evaluations = steps - 1
            _sync(latents)
        timings.decoder = time.perf_counter() - start
        start = time.perf_counter()
        with memory_guard("VAE"):
            image = self.to_pixels(latents[:, :, 0])
        timings.vae = time.perf_counter() - start
        return image, timings

    def to_pixels(self, latents: torch.Tensor):
        """FLUX VAE decode of [1, 16, H/8, W/8]; pixels truncated to bytes as the official code does."""
        from PIL import Image

        cfg = self.vae.config
        z = latents.to(self.dtype) / cfg.scaling_factor + cfg.shift_factor
        x = self.vae.decode(z).sample[0].float()
        pixels = ((x + 1) / 2).clamp(0, 1).mul(255).byte().permute(1, 2, 0).cpu()
        return Image.fromarray(pixels.numpy(), "RGB")  # numpy comes with diffusers

    def release(self) -> None:
        self.sigvq = self.decoder = self.vae = None


class _RefinedOnce(torch.nn.Module):
    """Stands in for the context refiner's layer list during one decode: the first call runs every layer,
    later calls (the same codes, another step) return that output."""

    def __init__(self, layers: torch.nn.ModuleList):
        super().__init__()
        self.layers, self.output = layers, None

    def forward(self, feats, mask, freqs):
        if self.output is None or self.output.shape != feats.shape:
            for layer in self.layers:
                feats = layer(feats, mask, freqs)
            self.output = feats
        return self.output


@contextmanager
def _context_refined_once(decoder):
    """Swap the refiner for `_RefinedOnce` for one decode (REFINE_CONTEXT_ONCE), and back."""
    layers = getattr(decoder, "context_refiner", None)
    if not REFINE_CONTEXT_ONCE or not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        yield
        return
    decoder.context_refiner = torch.nn.ModuleList([_RefinedOnce(layers)])
    try:
        yield
    finally:
        decoder.context_refiner = layers


def _sync(t: torch.Tensor) -> None:
    """Stage timings on a GPU must wait for the queued kernels."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)
