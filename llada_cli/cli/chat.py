"""`llada chat`: one question (argument or stdin), with images or without, or an interactive REPL."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..io.files import read_stdin_text
from ..limits import check_flags
from ..weights.registry import DEFAULT_MODEL
from .options import (
    AlphaOpt,
    CompileOpt,
    Confidence,
    ConfidenceOpt,
    DeviceOpt,
    DryRunOpt,
    ImageKeepOpt,
    ImagesOpt,
    JsonOpt,
    KeepRatioOpt,
    MaxVramOpt,
    ModelOpt,
    Quant,
    QuantOpt,
    SeedOpt,
    SprintOpt,
    SystemOpt,
    TextKeepOpt,
    Transparency,
    TransparencyOpt,
    VQPrecision,
    VQPrecisionOpt,
    WarmupOpt,
    show_quant_summary,
    sprint_settings,
)
from .plan import dry_run, planned_placement
from .runtime import output


def chat(
    prompt: Annotated[
        str | None, typer.Argument(help="Question; read from stdin when piped; REPL when omitted.")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    image: ImagesOpt = None,
    system: SystemOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most tokens in an answer.")] = 2048,
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per block.")] = 32,
    block_length: Annotated[int, typer.Option("--block-length", help="Tokens per block.")] = 32,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Accept every token above this confidence.")
    ] = 0.95,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k best (0 = all).")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 1.0,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    max_vram: MaxVramOpt = None,
    dry: DryRunOpt = False,
    compile: CompileOpt = False,
    quant: QuantOpt = Quant.none,
    sprint: SprintOpt = False,
    keep_ratio: KeepRatioOpt = 0.5,
    image_keep_ratio: ImageKeepOpt = None,
    text_keep_ratio: TextKeepOpt = None,
    confidence_alpha: AlphaOpt = 0.5,
    cache_warmup_steps: WarmupOpt = 1,
    confidence: ConfidenceOpt = Confidence.low,
    low_memory: Annotated[
        bool, typer.Option("--low-memory", help="Release the image encoder after each use.")
    ] = False,
    vq_precision: VQPrecisionOpt = VQPrecision.bf16,
    alpha: TransparencyOpt = Transparency.drop,
    json_out: JsonOpt = False,
) -> None:
    """Ask about text and images, one-shot or in an interactive REPL.

    Examples:  llada chat "What is a diffusion model?" --model tiny
               llada chat --image photo.jpg "What is in this picture?"
               cat photo.png | llada chat --image - "Describe it" --json
               llada chat            (REPL; /help lists its commands, /image attaches a picture)
    """
    from ..inputs.prompts import SYS_UNDERSTAND
    from ..io.images import load_image, read_stdin_image
    from ..pipelines.chat import ChatSession, ChatSettings

    show_quant_summary(quant)
    check_flags(locals())  # every value through its rule (llada_cli.limits), before anything else
    sources = image or []
    if dry:
        dry_run("chat", model, device, json_out, quant.value, max_vram=max_vram, images=len(sources))
    if sources.count("-") > 1:
        raise UsageError("only one image can come from stdin")
    stdin_image = read_stdin_image() if "-" in sources else None
    if stdin_image is not None and prompt is None:
        raise UsageError(
            "the image comes from stdin, so the question must be an argument",
            'llada chat --image - "What is in this picture?"',
        )
    if prompt is None and not sys.stdin.isatty():
        prompt = read_stdin_text()
        if not prompt.strip():
            raise UsageError("stdin held no prompt", 'pass a question: llada chat "..."')
    images = [load_image(src, stdin_image) for src in sources]  # bad files fail before any model loads
    sprint_cfg = sprint_settings(
        sprint,
        keep_ratio,
        image_keep_ratio,
        text_keep_ratio,
        confidence_alpha,
        cache_warmup_steps,
        confidence,
    )
    settings = ChatSettings(
        max_tokens,
        steps,
        block_length,
        threshold,
        temperature,
        top_k,
        top_p,
        seed,
        system or SYS_UNDERSTAND,
        sprint=sprint_cfg,
    )
    settings.check()
    pipeline = load_pipeline(
        model, device, vq_precision.value, low_memory, quant.value, max_vram, len(images), alpha.value
    )
    if compile:
        from ..runtime.compile import compile_backbone

        compile_backbone(pipeline.model)
    session = ChatSession(pipeline, settings)
    if prompt is None:
        from .repl import Repl

        Repl(session, json_out, staged=images).loop()
        return
    answer_once(session, prompt, json_out, images)


def load_pipeline(
    model: str,
    device: str,
    image_precision: str = "bf16",
    low_memory: bool = False,
    quant: str = "none",
    max_vram: float | None = None,
    images: int = 0,
    alpha: str = "drop",
):
    from ..checkpoint.layout import components_for
    from ..hub.resolve import parse_model_ref, resolve
    from ..pipelines.chat import ChatPipeline
    from ..runtime.device import resolve_device

    out = output()
    ref = parse_model_ref(model)
    dev, dtype = resolve_device(device)
    placement = planned_placement("chat", model, dev, quant, max_vram=max_vram, images=images)
    dev, low_memory = placement.device or dev, low_memory or placement.phased
    with out.console.status(f"loading {ref.label} on {dev}") if out.interactive else nullcontext():
        root = resolve(ref, components_for("chat"))
        pipeline = ChatPipeline.load(
            root, dev, dtype, image_precision, low_memory, quant, placement.layer_devices, alpha
        )
    out.detail(f"loaded {ref.label} from {root} on {dev}")
    return pipeline


def answer_once(session, prompt: str, json_out: bool, images: list = ()) -> None:
    """Ask one question; stream the answer (live on a terminal, by block in a pipe) or print JSON."""
    from .live import BlockStreamer, LiveView, TokenCanvas

    out = output()
    pipeline = session.pipeline
    turn = session.user_turn(prompt, images)
    for encoded in turn[1]:
        out.info(encoded.describe())
    canvas = TokenCanvas(pipeline.tokenizer.ids["mask"], pipeline.stop_ids)
    if json_out:
        result = session.ask(prompt, turn=turn)
        out.json(result.record())
        return
    if out.interactive:
        with LiveView(out.console, canvas, pipeline.tokenizer.decode) as view:
            result = session.ask(prompt, on_step=view.on_step, turn=turn)
        out.data(result.answer)
    else:
        streamer = BlockStreamer(canvas, pipeline.tokenizer.decode)
        result = session.ask(prompt, on_step=streamer.on_step, turn=turn)
        streamer.finish(result.answer)
    s = result.stats
    out.detail(
        f"{result.generated_tokens} tokens, {s.forward_passes} forward passes, {s.seconds:.2f} s, "
        f"seed {result.seed}"
    )


def save_transcript(session, path: Path, force: bool) -> None:
    """Write the transcript as JSON, atomically, never over an existing file without force."""
    import json

    from ..io.files import atomic_write_text

    if path.exists() and not force:
        raise UsageError(f"{path} exists", "choose another name, or /save --force FILE")
    atomic_write_text(path, json.dumps(session.transcript(), ensure_ascii=False, indent=2) + "\n")
