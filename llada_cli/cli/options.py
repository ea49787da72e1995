"""Options shared by several commands, declared once: `Annotated` aliases, and option groups.

A group (`sampler_options`, `run_options`, `decoder_options`, `output_options`) adds its flags to a
command's signature and hands the command one object for them, so a new sampler option is declared here
once and every command that samples has it. Groups use only Typer's documented API: the flags are ordinary
`Annotated` parameters of the signature Typer reads.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..limits import CHOICES


def _choices(name: str, setting: str) -> type[Enum]:
    """A Typer choice type made from the setting's values in llada_cli.limits."""
    return Enum(name, {str(v): str(v) for v in CHOICES[setting]}, type=str)


Quant = _choices("Quant", "quant")
DecoderQuant = _choices("DecoderQuant", "decoder_quant")
Decoder = _choices("Decoder", "decoder")
VQPrecision = _choices("VQPrecision", "vq_precision")
Transparency = _choices("Transparency", "alpha")
Confidence = _choices("Confidence", "confidence")

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar="LLADA_MODEL",
        help="Hub repo id (repo@revision allowed), a local folder, or `tiny` / `tiny-fp8`.",
    ),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (recorded in every output).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (JSON Lines for batches).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
ImagesOpt = Annotated[
    list[str] | None, typer.Option("--image", "-i", help="Input image path (repeatable; - = stdin).")
]
SystemOpt = Annotated[str | None, typer.Option("--system", help="Replace the system prompt.")]
MaxVramOpt = Annotated[
    float | None, typer.Option("--max-vram", help="GB of GPU memory llada may use (default: all free).")
]
QuantOpt = Annotated[
    Quant,
    typer.Option(
        "--quant", envvar="LLADA_QUANT", help="Backbone experts on load: int8, nf4 (bitsandbytes), fp8."
    ),
]
DecoderQuantOpt = Annotated[
    DecoderQuant,
    typer.Option("--decoder-quant", envvar="LLADA_DECODER_QUANT", help="Decoder transformer on load."),
]
SizeOpt = Annotated[str | None, typer.Option("--size", help="Output WIDTHxHEIGHT, multiples of 32.")]


def _group(flags: dict[str, tuple], kind: type, build=None):
    """A decorator adding `flags` ({name: (annotation, default)}) to a command's signature, and passing
    the command's parameter annotated `kind` as `build(values)` (default `kind(values)`)."""

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        target = next(p for p in sig.parameters.values() if p.annotation is kind)
        kept = [p for p in sig.parameters.values() if p is not target]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
            for name, (ann, default) in flags.items()
        ]

        @functools.wraps(fn)
        def command(**kwargs):
            values = {name: kwargs.pop(name) for name in flags}
            return fn(**kwargs, **{target.name: (build or kind)(values)})

        del command.__wrapped__  # Typer must read this signature, not fn's
        command.__signature__ = sig.replace(parameters=[*kept, *added])
        command.__annotations__ = {p.name: p.annotation for p in [*kept, *added]}
        return command

    return decorate


# -- the sampler --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerFlags:
    """The sampler flags a command was given (None: not given), applied over a base."""

    given: dict

    def settings(self, base=None):
        from ..sampling.settings import SamplerSettings
        from ..sampling.sprint import SprintSettings

        g = {k: v for k, v in self.given.items() if v is not None}
        sprint_keys = ("keep_ratio", "image_keep_ratio", "text_keep_ratio", "confidence_alpha")
        sprint = None
        if g.pop("sprint", False):
            warmup, confidence = g.pop("cache_warmup_steps", 1), g.pop("confidence", Confidence.low)
            sprint = SprintSettings(
                **{k: g[k] for k in sprint_keys if k in g}, warmup_steps=warmup, confidence=confidence.value
            )
        changes = {k: v for k, v in g.items() if k not in (*sprint_keys, "cache_warmup_steps", "confidence")}
        base = base or SamplerSettings()
        return replace(base, **changes, sprint=sprint if sprint is not None else base.sprint)


def _opt(kind, *names: str, help: str):
    return Annotated[kind | None, typer.Option(*names, help=help)]


def sampler_options(steps: int | str):
    """--steps (this command's default `steps`), --block-length, --threshold, --temperature, --top-k,
    --top-p, --min-p, and SPRINT's switches."""
    flags = {
        "steps": (_opt(int, "--steps", help=f"Denoising steps per block [{steps}]."), None),
        "block_length": (_opt(int, "--block-length", help="Tokens per block [32]."), None),
        "threshold": (_opt(float, "--threshold", help="Accept every position above this confidence [0.95]."), None),
        "temperature": (_opt(float, "--temperature", help="Sampling temperature; 0 is greedy [0]."), None),
        "top_k": (_opt(int, "--top-k", help="Sample among the k most likely (0: all) [0]."), None),
        "top_p": (_opt(float, "--top-p", help="Nucleus: the smallest set reaching this mass [1]."), None),
        "min_p": (_opt(float, "--min-p", help="Drop tokens below min-p x the best one's probability [0]."), None),
        "sprint": (Annotated[bool, typer.Option("--sprint", help="SPRINT: pruned prefix cache, adaptive unmasking.")], False),
        "keep_ratio": (_opt(float, "--keep-ratio", help="SPRINT: share of prefix positions kept [0.5]."), None),
        "image_keep_ratio": (_opt(float, "--image-keep-ratio", help="SPRINT: share of image-code positions kept."), None),
        "text_keep_ratio": (_opt(float, "--text-keep-ratio", help="SPRINT: share of text positions kept."), None),
        "confidence_alpha": (_opt(float, "--confidence-alpha", help="SPRINT: weight of attention vs confidence [0.5]."), None),
        "cache_warmup_steps": (_opt(int, "--cache-warmup-steps", help="SPRINT: full steps before pruning [1]."), None),
        "confidence": (Annotated[Confidence, typer.Option("--confidence", help="SPRINT: how positions are ranked.")], Confidence.low),
    }  # fmt: skip
    return _group(flags, SamplerFlags)


# -- loading and placement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFlags:
    """How the engine loads: the RunOptions, and whether only the memory plan was asked for."""

    values: dict

    @property
    def dry_run(self) -> bool:
        return self.values["dry_run"]

    def options(self):
        from ..settings import RunOptions

        v = self.values
        return RunOptions(
            device=v["device"],
            quant=v["quant"].value,
            decoder_quant=getattr(v.get("decoder_quant"), "value", "none"),
            max_vram=v["max_vram"],
            compile=v["compile"],
            low_memory=v["low_memory"],
            image_precision=getattr(v.get("vq_precision"), "value", "bf16"),
            alpha=getattr(v.get("alpha"), "value", "drop"),
        )

    def local_flags_given(self) -> list[str]:
        """The flags given that only a local run can honour (how weights load and where they go)."""
        v = self.values
        neutral = {"device": "auto", "quant": "none", "decoder_quant": "none", "max_vram": None, "compile": False, "low_memory": False, "dry_run": False, "vq_precision": "bf16", "alpha": "drop"}  # fmt: skip
        given = {n: getattr(v[n], "value", v[n]) for n in neutral if n in v}
        return [
            "--" + n.replace("_", "-") + ("" if isinstance(value, bool) else f" {value}")
            for n, value in given.items()
            if value != neutral[n]
        ]


def run_options(decoder: bool = True, images: bool = True):
    """--device, --quant, --max-vram, --dry-run, --compile, --low-memory; --decoder-quant for commands
    that decode; --vq-precision and --alpha for commands that read images."""
    flags = {
        "device": (Annotated[str, typer.Option("--device", envvar="LLADA_DEVICE", help="cuda, cuda:N, cpu or auto.")], "auto"),
        "quant": (QuantOpt, Quant.none),
        "max_vram": (MaxVramOpt, None),
        "dry_run": (Annotated[bool, typer.Option("--dry-run", help="Print the memory plan (what goes where, and why) and stop.")], False),
        "compile": (Annotated[bool, typer.Option("--compile", help="torch.compile the per-block step (opt-in: slower start).")], False),
        "low_memory": (Annotated[bool, typer.Option("--low-memory", help="Load stages in turn and release them: less memory, slower.")], False),
    }  # fmt: skip
    if decoder:
        flags["decoder_quant"] = (DecoderQuantOpt, DecoderQuant.none)
    if images:
        flags["vq_precision"] = (
            Annotated[VQPrecision, typer.Option("--vq-precision", help="Image tokenizer arithmetic: bf16 as the official code, or fp32 (not official).")],
            VQPrecision.bf16,
        )  # fmt: skip
        flags["alpha"] = (
            Annotated[Transparency, typer.Option("--alpha", help="Transparent pixels of input images: drop the alpha channel (official) or composite on white / black.")],
            Transparency.drop,
        )  # fmt: skip
    return _group(flags, RunFlags)


# -- decoding and writing pictures --------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderFlags:
    values: dict

    def settings(self, base=None):
        """The decoder flags given over `base` (a --params-from record's, or the defaults)."""
        from ..settings import DecoderSettings

        v, base = self.values, base or DecoderSettings()
        mode = v["decoder"].value if v["decoder"] is not None else base.mode
        steps = (
            v["decoder_steps"]
            if v["decoder_steps"] is not None
            else (base.steps if mode == base.mode else None)
        )
        rm = (
            v["resolution_multiplier"]
            if v["resolution_multiplier"] is not None
            else base.resolution_multiplier
        )
        return DecoderSettings(mode=mode, steps=steps, resolution_multiplier=rm)


def decoder_options():
    """--decoder, --decoder-steps, --resolution-multiplier."""
    flags = {
        "decoder": (Annotated[Decoder | None, typer.Option("--decoder", help="turbo (8 distilled steps) or normal (50) [turbo].")], None),
        "decoder_steps": (_opt(int, "--decoder-steps", help="Decoder steps [8 turbo, 50 normal]."), None),
        "resolution_multiplier": (_opt(int, "--resolution-multiplier", help="Pixels per code = 16 x this [2]."), None),
    }  # fmt: skip
    return _group(flags, DecoderFlags)


@dataclass(frozen=True)
class OutputFlags:
    """Where a batch of pictures goes."""

    output: Path | None
    out_dir: Path | None
    name: str
    force: bool
    resume: bool
    metadata: bool


def output_options(default_name: str):
    """-o, --out-dir, --name, --force, --resume, --no-metadata."""
    flags = {
        "output": (Annotated[Path | None, typer.Option("--output", "-o", help="Output image (one only): .png, .jpg or .webp.")], None),
        "out_dir": (Annotated[Path | None, typer.Option("--out-dir", help="Output folder [.].")], None),
        "name": (Annotated[str, typer.Option("--name", help="File name pattern: index, seed, slug, width, height.")], default_name),
        "force": (ForceOpt, False),
        "resume": (Annotated[bool, typer.Option("--resume", help="Skip items the manifest marks done.")], False),
        "no_metadata": (Annotated[bool, typer.Option("--no-metadata", help="No generation record in the images.")], False),
    }  # fmt: skip

    def build(v: dict) -> OutputFlags:
        return OutputFlags(
            v["output"], v["out_dir"], v["name"], v["force"], v["resume"], not v["no_metadata"]
        )

    return _group(flags, OutputFlags, build)


def show_quant_summary(options) -> None:
    """With a quantization chosen, the loaders' summary (what was packed, what stayed) is shown on stderr."""
    import logging

    chosen = options.quant != "none" or options.decoder_quant != "none"
    shown = chosen and logging.getLogger("llada").getEffectiveLevel() <= logging.WARNING
    logging.getLogger("llada.quant").setLevel(logging.INFO if shown else logging.NOTSET)


# -- a server instead of local weights ----------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFlags:
    """--server (and its key, its time limit, --parallel): send the work to a running server."""

    values: dict

    @property
    def server(self) -> str | None:
        return self.values["server"]

    @property
    def parallel(self) -> int:
        return self.values.get("parallel") or 1

    def connect(self, run: RunFlags):
        """The server to use (None: run locally). Flags that only a local run honours are refused."""
        from ..errors import UsageError
        from ..limits import check

        if self.values.get("parallel") is not None:
            check("parallel", self.values["parallel"])
        check("timeout", self.values["server_timeout"], "--server-timeout")
        if not self.server:
            if self.parallel > 1:
                raise UsageError("--parallel sends batch items to a server at once", "add --server URL")
            return None
        local = run.local_flags_given()
        if local:
            raise UsageError(
                f"{', '.join(f.split()[0] for f in local)} {'sets' if len(local) == 1 else 'set'} how a local run loads the model; with --server the server decides",
                ("drop it here, and start the server with it" if len(local) == 1 else "drop them here, and start the server with them") + ": llada serve " + " ".join(local),
            )
        from ..server.client import Remote

        return Remote(self.server, self.values["api_key"], self.values["server_timeout"])


def remote_options(batch: bool):
    """--server, --api-key, --server-timeout; --parallel for commands that run batches."""
    flags = {
        "server": (Annotated[str | None, typer.Option("--server", envvar="LLADA_SERVER", help="Send the work to a llada serve or SGLang-Omni URL.")], None),
        "api_key": (Annotated[str | None, typer.Option("--api-key", envvar="LLADA_API_KEY", help="The server's Bearer key.")], None),
        "server_timeout": (Annotated[float, typer.Option("--server-timeout", help="Seconds to wait for one answer from the server.")], 600.0),
    }  # fmt: skip
    if batch:
        flags["parallel"] = (
            _opt(int, "--parallel", help="Batch items sent to the server at once [1]."),
            None,
        )
    return _group(flags, RemoteFlags)
