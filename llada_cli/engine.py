"""The engine: one model reference and its run options, loaded lazily and once, serving every task.

It resolves the checkpoint, follows the memory plan, loads each component on first use (the tokenizer,
the backbone, the image tokenizer, one decoder stack per decoder mode) and keeps it for every later
request, so a batch, the REPL or a server loads nothing twice. Tasks return data (results, records,
pictures, events through callbacks); the engine never writes files and never prints: the CLI, the REPL,
the batch runner, the benchmarks and the tests are its callers.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .memory.plan import PlanRequest, RunPlacement
from .records import (
    GenerationRecord,
    decoder_record,
    edit_settings_record,
    image_settings_record,
    run_record,
)
from .settings import DecoderSettings, EditSettings, ImageSettings, InterleaveSettings, RunOptions
from .weights.registry import DEFAULT_MODEL


@dataclass(kw_only=True)
class ImageResult:
    """A finished picture: the codes that made it, the pixels, its record, and how long each stage took."""

    codes: object  # pipelines.text2image.ImageCodes
    image: object  # PIL.Image.Image
    record: GenerationRecord
    timings: object  # pipelines.decode.DecodeTimings
    sources: list = field(default_factory=list)  # an edit's encoded source images


class Engine:
    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        options: RunOptions | None = None,
        *,
        plan: PlanRequest | None = None,
    ):
        """`plan` says what the engine will mostly do, for the memory plan (a chat by default)."""
        from .hub.resolve import parse_model_ref
        from .memory.plan import planned_placement
        from .runtime.device import resolve_device

        self.options = options or RunOptions()
        self.ref = parse_model_ref(model)
        device, self.dtype = resolve_device(self.options.device)
        o = self.options
        request = plan or PlanRequest(command="chat", model=model, quant=o.quant, max_vram=o.max_vram)
        self.placement: RunPlacement = planned_placement(request, device)
        self.device = self.placement.device or device
        self.phased = o.low_memory or self.placement.phased  # stages in turn, not all resident
        self._root: Path | None = None
        self._resolved: set[str] = set()
        self._tokenizer = self._model = self._encoder = None
        self._decoders: dict[str, object] = {}
        self.loads: Counter = Counter()

    # -- what is loaded ---------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return self.ref.label

    def root(self, *components: str) -> Path:
        """The checkpoint folder holding `components`, fetched the first time they are needed."""
        if not set(components) <= self._resolved:
            from .hub.resolve import resolve

            self._resolved |= set(components)
            self._root = resolve(self.ref, tuple(sorted(self._resolved)))
        return self._root

    @property
    def revision(self) -> str | None:
        return self._root.name if self.ref.repo_id and self._root else None

    @property
    def tokenizer(self):
        """The text tokenizer alone, quick to load: prompts are measured before the backbone loads."""
        if self._tokenizer is None:
            from .inputs.tokenizer import TextTokenizer

            self._tokenizer = TextTokenizer(self.root("tokenizer") / "tokenizer.json")
        return self._tokenizer

    @functools.cached_property
    def config(self):
        """The backbone's config (a JSON read, no weights; once: every prompt's precheck asks)."""
        from .checkpoint.components import read_config

        return read_config(self.root("backbone"), "backbone")

    @property
    def model(self):
        if self._model is None:
            from .checkpoint.components import load_backbone
            from .runtime.device import memory_guard

            if self.phased:  # stages in turn: the decoders go before the backbone comes back
                self.release_decoders()
            o = self.options
            with memory_guard("loading the backbone"):
                model = load_backbone(
                    self.root("backbone"), self.device, self.dtype, o.quant, self.placement.layer_devices
                )
            self.tokenizer.check_image_offset(model.cfg.image_token_offset)
            if o.compile:
                from .runtime.compile import compile_backbone

                compile_backbone(model)
            self._model = model
            self.loads["backbone"] += 1
        return self._model

    @property
    def encoder(self):
        """The image tokenizer (SigLIP-VQ) with its cache of codes; loads on the first image."""
        if self._encoder is None:
            from .pipelines.understand import ImageEncoder

            o = self.options
            self._encoder = ImageEncoder(
                self.root("image_tokenizer"),
                self.placement.stage_devices.get("image_tokenizer", self.device),
                precision=o.image_precision,
                alpha=o.alpha,
                low_memory=o.low_memory,
            )
        return self._encoder

    def decoder(self, mode: str = "turbo"):
        """The decoder stack (SigVQ, the decoder transformer, the VAE) for `mode`, loaded once."""
        if mode not in self._decoders:
            from .checkpoint.layout import DECODERS
            from .pipelines.decode import DecoderStack
            from .runtime.device import memory_guard

            root = self.root("sigvq", DECODERS[mode], "vae")
            with memory_guard("loading the decoder"):
                self._decoders[mode] = DecoderStack.load(
                    root,
                    mode,
                    self.placement.stage_devices.get("decoder", self.device),
                    self.dtype,
                    self.options.decoder_quant,
                    self.placement.decoder_offload,
                )
            self.loads["decoder"] += 1
        return self._decoders[mode]

    def release_backbone(self) -> None:
        """Free the backbone (and the image tokenizer) before decoding: the phased plan's turn."""
        from .runtime.device import empty_cache

        self._model = None
        if self._encoder is not None:
            self._encoder.release()
        empty_cache()

    def release_decoders(self) -> None:
        """Free every decoder stack (a phased run's backbone turn)."""
        from .runtime.device import empty_cache

        if self._decoders:
            for stack in self._decoders.values():
                stack.release()
            self._decoders.clear()
            empty_cache()

    # -- tasks ------------------------------------------------------------------------------------------

    def answer(self, turns, settings, on_step=None):
        """The next assistant turn (pipelines.chat.ChatResult)."""
        from .pipelines.chat import answer

        return answer(self.model, self.tokenizer, turns, settings, on_step)

    def encode(self, images, prepare=None, tag=None):
        """Codes for user images (pipelines.understand.EncodedImage), cached by content."""
        return self.encoder.encode(images, prepare, tag)

    def text_to_image_codes(
        self, prompt: str, grid, settings: ImageSettings, decoder: DecoderSettings, seed: int, on_step=None
    ):
        """(ImageCodes, its record): the backbone's part of a picture from a prompt."""
        from .pipelines.text2image import TextToImage

        codes = TextToImage(self.model, self.tokenizer).generate(prompt, grid, settings, seed, on_step)
        record = self.record(
            prompt=prompt,
            seed=seed,
            grid=codes.grid,
            settings=image_settings_record(settings),
            decoder=decoder,
            thinking=codes.thinking,
        )
        return codes, record

    def edit_codes(
        self,
        images,
        instruction: str,
        settings: EditSettings,
        decoder: DecoderSettings,
        seed: int,
        grid=None,
        on_step=None,
    ):
        """(ImageCodes, its record, the encoded sources) for an edit of `images` (the first is the one
        edited, the others references)."""
        from .pipelines.edit import Editor
        from .pipelines.text2image import TextToImage

        editor = Editor(TextToImage(self.model, self.tokenizer), self.encoder)
        sources = editor.sources(images, settings)
        codes = editor.edit(sources, instruction, settings, seed, grid, on_step)
        record = self.record(
            prompt=instruction,
            seed=seed,
            grid=codes.grid,
            settings=edit_settings_record(settings),
            decoder=decoder,
            instruction=instruction,
            images=[s.record() for s in sources],
        )
        return codes, record, sources

    def decode(self, codes: list[int], grid, seed: int, decoder: DecoderSettings, on_step=None):
        """(PIL image, timings) for codes on a grid."""
        h, w = grid
        stack = self.decoder(decoder.mode)
        return stack.decode(codes, h, w, seed, decoder.steps, decoder.resolution_multiplier, on_step)

    def check_codes(self, codes: list[int], where: str) -> None:
        """Codes must lie in the model's image vocabulary: checked from the config, before any load."""
        from .errors import UsageError

        vocab = self.config.image_vocab_size
        bad = next((c for c in codes if type(c) is not int or not 0 <= c < vocab), None)
        if bad is not None:
            raise UsageError(f"{where}: code {bad!r} is not an integer in [0, {vocab})")

    def check_prompt_fits(self, prompt: str, grid) -> None:
        """A text-to-image prompt that cannot fit the context is refused before the backbone loads."""
        from .errors import ContextOverflow
        from .inputs.prompts import encode, t2i_prompt

        h, w = grid
        config = self.config
        n = len(encode(t2i_prompt(prompt, h, w), self.tokenizer, config.image_token_offset))
        if n + h * w > config.max_position_embeddings:
            raise ContextOverflow(
                f"the prompt ({n} tokens) and its {h}x{w} codes need {n + h * w} positions; the context "
                f"holds {config.max_position_embeddings}",
                "use a shorter prompt or a smaller --size",
            )

    def interleave(
        self, prompt, settings: InterleaveSettings, seed: int, images=(), on_segment=None, on_step=None
    ):
        """A document (pipelines.interleave.Document); each image frame's codes reach `on_segment`."""
        from .pipelines.interleave import Interleaver
        from .pipelines.text2image import TextToImage

        blocks = [e.block for e in self.encode(list(images))] if images else []
        interleaver = Interleaver(TextToImage(self.model, self.tokenizer))
        return interleaver.run(prompt, settings, seed, blocks, on_segment, on_step)

    # -- records and whole pictures ----------------------------------------------------------------------

    def record(
        self, *, prompt: str, seed: int, grid, settings: dict, decoder: DecoderSettings, **extra
    ) -> GenerationRecord:
        """The generation record of a picture this engine made."""
        px = decoder.pixels_per_code
        return GenerationRecord(
            model=self.label,
            revision=self.revision,
            prompt=prompt,
            seed=seed,
            width=grid[1] * px,
            height=grid[0] * px,
            grid=tuple(grid),
            settings=settings | decoder_record(decoder) | run_record(self.options),
            **extra,
        )

    def text_to_image(
        self,
        prompt: str,
        *,
        grid,
        settings: ImageSettings,
        decoder: DecoderSettings,
        seed: int,
        on_step=None,
        on_decode=None,
    ) -> ImageResult:
        """Codes, then pixels, then the record: one picture from a prompt (`on_step` sees the sampler's
        steps, `on_decode(i, n)` the decoder's)."""
        codes, record = self.text_to_image_codes(prompt, grid, settings, decoder, seed, on_step)
        if self.phased:  # stages in turn: the next picture loads the backbone again
            self.release_backbone()
        return self._picture(codes, record, decoder, on_decode=on_decode)

    def edit(
        self,
        images,
        instruction: str,
        *,
        settings: EditSettings,
        decoder: DecoderSettings,
        seed: int,
        grid=None,
        on_step=None,
        on_decode=None,
    ) -> ImageResult:
        """One edited picture (the first image edited, the others references)."""
        codes, record, sources = self.edit_codes(images, instruction, settings, decoder, seed, grid, on_step)
        if self.phased:
            self.release_backbone()
        return self._picture(codes, record, decoder, sources, on_decode)

    def frame(
        self, segment, prompt: str, settings: dict, decoder: DecoderSettings, on_decode=None
    ) -> ImageResult:
        """An interleaved document's image segment decoded, with its record."""
        record = self.record(
            prompt=prompt,
            seed=segment.seed,
            grid=segment.grid,
            settings=settings,
            decoder=decoder,
            frame=segment.frame,
            guidance=segment.guidance,
        )
        return self._picture(segment, record, decoder, on_decode=on_decode)

    def _picture(self, codes, record: GenerationRecord, decoder, sources=(), on_decode=None) -> ImageResult:
        image, timings = self.decode(codes.codes, codes.grid, record.seed, decoder, on_decode)
        return ImageResult(codes=codes, image=image, record=record, timings=timings, sources=list(sources))
