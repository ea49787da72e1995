"""Text-to-image for one prompt or a batch: codes on the backbone, pixels on the decoder stack.

Both stages load once and serve the whole batch. With `low_memory` the batch runs in two phases (every
item's codes, then the backbone is released, then every decode), so the peak is the larger stage rather
than their sum. Each item's codes are saved next to its image before decoding, every state change goes to
the manifest, and a failing item is recorded and skipped while the rest go on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..batch import DEFAULT_NAME, Item, Manifest, codes_path, item_record, reserve_output
from ..errors import Interrupted, LladaError, ModelUnavailable, OutOfMemory, UsageError
from ..io.files import atomic_write_text
from ..io.imagefiles import save_image
from ..io.outputs import Reservations
from ..runtime.device import memory_guard
from .text2image import ImageTokenGenerator, T2ISettings, grid_for

# Failures that are the run's, not an item's: the next item would meet them alike, so the batch stops
# with one message and its own exit code (a damaged or missing model, out of memory, Ctrl-C).
RUN_FAILURES = (Interrupted, OutOfMemory, ModelUnavailable)


@dataclass
class GenerateConfig:
    t2i: T2ISettings = field(default_factory=T2ISettings)
    decoder: str = "turbo"
    decoder_steps: int | None = None
    resolution_multiplier: int = 2
    low_memory: bool = False
    metadata: bool = True
    force: bool = False
    name_pattern: str = DEFAULT_NAME


class Events:
    """What a batch reports as it goes; the CLI renders these (progress, JSON lines, errors)."""

    def started(self, item: Item, phase: str) -> None: ...
    def stage(self, item: Item, stage: str, step: int, total: int) -> None: ...
    def thinking(self, item: Item, text: str) -> None: ...
    def done(self, item: Item, record: dict) -> None: ...
    def failed(self, item: Item, message: str) -> None: ...
    def skipped(self, item: Item, why: str) -> None: ...


class ImagePipeline:
    """The loaded components for text-to-image; each stage loads on first use and stays for the batch."""

    def __init__(
        self,
        root: Path,
        label: str,
        device: str,
        dtype,
        decoder: str = "turbo",
        revision=None,
        quant: str = "none",
        decoder_quant: str = "none",
        layer_devices: list[str] | None = None,
        decoder_offload: bool = False,
        compile: bool = False,
        stage_devices: dict[str, str] | None = None,
        image_precision: str = "bf16",
        alpha: str = "drop",
    ):
        self.root, self.label, self.revision = Path(root), label, revision
        self.image_precision, self.alpha = image_precision, alpha  # how source images are encoded
        self.quant, self.decoder_quant = quant, decoder_quant
        self.layer_devices = layer_devices  # the memory plan's backbone placement
        self.decoder_offload = decoder_offload  # the memory plan streams the decoder through the GPU
        self.compile = compile  # --compile: torch.compile the backbone's per-block work
        self.stage_devices = stage_devices or {}  # the memory plan: decoder, image tokenizer
        self.device, self.dtype, self.decoder_mode = device, dtype, decoder
        self._generator: ImageTokenGenerator | None = None
        self._decoder = None
        self._encoder = None
        self.loads = {"backbone": 0, "decoder": 0}

    @functools.cached_property
    def tokenizer(self):
        """The text tokenizer alone (quick to load): prompts are measured before the backbone loads."""
        from ..inputs.tokenizer import TextTokenizer

        return TextTokenizer(self.root / "tokenizer.json")

    @property
    def generator(self) -> ImageTokenGenerator:
        if self._generator is None:
            from ..checkpoint.components import load_backbone

            tokenizer = self.tokenizer
            with memory_guard("loading the backbone"):
                model = load_backbone(self.root, self.device, self.dtype, self.quant, self.layer_devices)
            tokenizer.check_image_offset(model.cfg.image_token_offset)
            if self.compile:
                from ..runtime.compile import compile_backbone

                compile_backbone(model)
            self._generator = ImageTokenGenerator(model, tokenizer)
            self.loads["backbone"] += 1
        return self._generator

    @property
    def decoder(self):
        if self._decoder is None:
            from .decode import DecoderStack

            with memory_guard("loading the decoder"):
                self._decoder = DecoderStack.load(
                    self.root,
                    self.decoder_mode,
                    self.stage_devices.get("decoder", self.device),
                    self.dtype,
                    self.decoder_quant,
                    self.decoder_offload,
                )
            self.loads["decoder"] += 1
        return self._decoder

    @property
    def encoder(self):
        """The image tokenizer, for editing sources; loads on first use."""
        if self._encoder is None:
            from .understand import ImageEncoder

            self._encoder = ImageEncoder(
                self.root,
                self.stage_devices.get("image_tokenizer", self.device),
                precision=self.image_precision,
                alpha=self.alpha,
            )
        return self._encoder

    def release_backbone(self) -> None:
        from ..runtime.device import empty_cache

        self._generator = None
        if self._encoder is not None:
            self._encoder.release()
        empty_cache()


def settings_for(item: Item, cfg: GenerateConfig) -> T2ISettings:
    changes = {k: v for k, v in (("steps", item.steps), ("cfg", item.cfg)) if v is not None}
    return dataclasses.replace(cfg.t2i, **changes)


def base_record(pipe: ImagePipeline, item: Item, cfg: GenerateConfig, grid) -> dict:
    from .decode import DEFAULT_DECODER_STEPS
    from .text2image import PIXELS_PER_CODE

    t2i = settings_for(item, cfg)
    px = PIXELS_PER_CODE * cfg.resolution_multiplier  # output pixels per code
    return {
        "llada": __version__,
        "model": pipe.label,
        "revision": pipe.revision,
        "prompt": item.prompt,
        "seed": item.seed,
        "width": grid[1] * px,
        "height": grid[0] * px,
        "grid": list(grid),
        "settings": {
            "steps": t2i.steps,
            "cfg": t2i.cfg,
            "block_length": t2i.block_length,
            "threshold": t2i.threshold,
            "thinking": t2i.thinking,
            "decoder": cfg.decoder,
            "decoder_steps": cfg.decoder_steps or DEFAULT_DECODER_STEPS[cfg.decoder],
            "resolution_multiplier": cfg.resolution_multiplier,
            "sprint": dataclasses.asdict(t2i.sprint) if t2i.sprint else None,
            "quant": pipe.quant,
            "decoder_quant": pipe.decoder_quant,
        },
    }


class BatchRun:
    def __init__(
        self,
        pipe: ImagePipeline,
        cfg: GenerateConfig,
        out_dir: Path,
        manifest: Manifest | None,
        events: Events,
        single_output: Path | None = None,
        make_codes=None,
    ):
        self.pipe, self.cfg, self.out_dir, self.manifest = pipe, cfg, Path(out_dir), manifest
        self.events, self.single_output = events, single_output
        self.make_codes = make_codes or text_to_codes(pipe, cfg)  # the backbone stage, per kind of job
        self.failed: list[Item] = []

    def run(self, items: list[Item], resume: bool = False) -> list[Item]:
        """Generate every item; returns the ones that failed. Every output name is reserved before any
        work, so the phased path (all codes, then all decodes) names items exactly as the other does."""
        previous = self.manifest.load() if (self.manifest and resume) else {}
        self.names = Reservations(self.out_dir, self.cfg.force, reclaim=resume)
        try:
            todo = [job for item in items if (job := self._plan(item, previous.get(item.id, {})))]
            if self.cfg.low_memory:
                pending = [(it, target if ready else self._codes(it, target)) for it, target, ready in todo]
                self.pipe.release_backbone()
                for item, target in pending:
                    if target is not None:
                        self._decode(item, target)
            else:
                for item, target, ready in todo:
                    if ready or self._codes(item, target) is not None:
                        self._decode(item, target)
        finally:
            self.names.release_all()
        return self.failed

    def _plan(self, item: Item, before: dict) -> tuple[Item, Path, bool] | None:
        """(item, its output path, whether its codes are already saved), or None: done before, or failed."""
        locate = self.manifest.locate if self.manifest else (lambda record, key: None)
        done, codes = locate(before, "output"), locate(before, "codes_file")
        if before.get("state") == "done" and done is not None and done.is_file() and done.stat().st_size:
            self.events.skipped(item, "done in an earlier run")
            return None
        if before.get("state") in ("codes", "done") and done is not None:  # this batch's own name, again
            self.names.keep(done)
            ready = before["state"] == "codes" and codes is not None and codes.is_file()
            return item, done, ready
        try:
            if item.error:
                raise UsageError(item.error)
            if (precheck := getattr(self.make_codes, "precheck", None)) is not None:
                precheck(item)  # a command-line prompt that cannot fit: exit 2 before any work
            if self.single_output is not None:
                return item, self.names.single(self.single_output), False  # refused: exit 2, no work done
            return item, reserve_output(item, self.names, self.cfg.name_pattern), False
        except UsageError as exc:
            if self.single_output is not None or item.line is None and not item.error:
                raise
            self._fail(item, exc.message)
            return None

    def _fail(self, item: Item, message: str, target: Path | None = None) -> None:
        if target is not None:
            self.names.release(target)
        self.failed.append(item)
        if self.manifest:
            self.manifest.append(item_record(item, "failed", error=message))
        self.events.failed(item, message)

    def _codes(self, item: Item, target: Path) -> Path | None:
        """Backbone stage: codes for the item, saved next to where its image will go. None if it failed."""
        self.events.started(item, "codes")
        try:
            with memory_guard("backbone"):
                result, extra = self.make_codes(
                    item, lambda e: self.events.stage(item, "backbone", e.block_start, 0)
                )
            if result.thinking is not None:
                self.events.thinking(item, result.thinking)
            record = base_record(self.pipe, item, self.cfg, result.grid)
            record["settings"].update(extra.pop("settings", {}))
            record |= extra | {
                "thinking": result.thinking,
                "codes": result.codes,
                "backbone": {
                    "seconds": round(result.seconds, 4),
                    "forward_passes": result.stats.forward_passes,
                    "prompt_tokens": result.prompt_tokens,
                },
            }
            cpath = codes_path(target)
            atomic_write_text(cpath, json.dumps(record, ensure_ascii=False) + "\n")
        except RUN_FAILURES:
            raise
        except OSError as exc:  # a full disk, a vanished folder: this item fails, the batch goes on
            self._fail(item, f"cannot write its files: {exc.strerror or exc}", target)
            return None
        except (LladaError, ValueError) as exc:
            self._fail(item, getattr(exc, "message", str(exc)), target)
            return None
        if self.manifest:
            rel = self.manifest.relative
            self.manifest.append(item_record(item, "codes", output=rel(target), codes_file=rel(cpath)))
        return target

    def _decode(self, item: Item, target: Path) -> None:
        self.events.started(item, "decode")
        cpath = codes_path(target)
        try:
            saved = json.loads(cpath.read_text(encoding="utf-8"))
            h, w = saved["grid"]
            image, timings = self.pipe.decoder.decode(
                saved["codes"],
                h,
                w,
                item.seed,
                self.cfg.decoder_steps,
                self.cfg.resolution_multiplier,
                on_step=lambda i, n: self.events.stage(item, "decoder", i, n),
            )
            record = {k: v for k, v in saved.items() if k not in ("codes", "backbone")}
            record["codes_file"] = cpath.name
            save_image(image, target, record if self.cfg.metadata else None)
            self.names.written(target)
        except RUN_FAILURES:
            raise
        except OSError as exc:
            self._fail(item, f"cannot write its files: {exc.strerror or exc}", target)
            return
        except (LladaError, ValueError, KeyError) as exc:
            self._fail(item, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}", target)
            return
        if self.manifest:
            rel = self.manifest.relative
            self.manifest.append(item_record(item, "done", output=rel(target), codes_file=rel(cpath)))
        done = record | {
            "index": item.index,
            "id": item.id,
            "path": str(target),
            "codes_file": str(cpath),
            "backbone": saved.get("backbone"),
            "decoder": {
                "seconds": round(timings.decoder, 4),
                "evaluations": timings.decoder_evaluations,
                "sigvq_seconds": round(timings.sigvq, 4),
                "vae_seconds": round(timings.vae, 4),
            },
        }
        self.events.done(item, done)


def text_to_codes(pipe: ImagePipeline, cfg: GenerateConfig):
    """The backbone stage of text-to-image for one item: (ImageCodes, extra record fields). Its
    `precheck` measures an item's prompt before any model loads."""

    def make(item: Item, on_step):
        grid = grid_for(item.width, item.height, cfg.resolution_multiplier)
        return pipe.generator.generate(item.prompt, grid, settings_for(item, cfg), item.seed, on_step), {}

    def precheck(item: Item) -> None:
        from ..checkpoint.components import read_config
        from ..inputs.prompts import encode, t2i_prompt

        h, w = grid_for(item.width, item.height, cfg.resolution_multiplier)
        context = read_config(pipe.root, "backbone")
        n = len(encode(t2i_prompt(item.prompt, h, w), pipe.tokenizer, context.image_token_offset))
        if n + h * w > context.max_position_embeddings:
            raise UsageError(
                f"the prompt ({n} tokens) and its {h}x{w} codes need {n + h * w} positions; the context "
                f"holds {context.max_position_embeddings}",
                "use a shorter prompt or a smaller --size",
            )

    make.precheck = precheck
    return make


def edit_to_codes(pipe: ImagePipeline, settings, grid: tuple[int, int] | None):
    """The backbone stage of an edit: crop and encode the item's images, then the new codes."""
    from ..io.images import load_image
    from .edit import Editor

    def make(item: Item, on_step):
        changes = {
            k: v
            for k, v in (
                ("steps", item.steps),
                ("cfg_text", item.cfg),
                ("cfg_image", item.extra.get("cfg_image")),
            )
            if v is not None
        }
        chosen = dataclasses.replace(settings, **changes)
        images = [load_image(p) for p in item.extra["images"]]
        editor = Editor(pipe.generator, pipe.encoder)
        sources = editor.sources(images, chosen)
        result = editor.edit(sources, item.prompt, chosen, item.seed, grid, on_step)
        extra = {
            "instruction": item.prompt,
            "images": [s.record() for s in sources],
            "settings": {
                "steps": chosen.steps,
                "cfg": None,
                "cfg_text": chosen.cfg_text,
                "cfg_image": chosen.cfg_image,
                "budget": chosen.budget,
                "fit": chosen.fit,
                "reference_layout": chosen.layout,
            },
        }
        return result, extra

    return make


def decode_codes_file(pipe: ImagePipeline, saved: dict, seed: int, steps: int | None, rm: int):
    """Re-decode checked codes (batch.read_codes_file) without the backbone."""
    start = time.perf_counter()
    h, w = saved["grid"]
    image, timings = pipe.decoder.decode(saved["codes"], h, w, seed, steps, rm)
    return image, timings, time.perf_counter() - start
