"""`llada chat`: one question (argument or stdin) or an interactive REPL, on text for now."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from ..errors import NotAvailableYet, UsageError
from ..weights.registry import DEFAULT_MODEL
from .options import DeviceOpt, ImagesOpt, JsonOpt, ModelOpt, Quant, QuantOpt, SeedOpt, SystemOpt
from .runtime import output


def chat(
    prompt: Annotated[
        str | None, typer.Argument(help="Question; read from stdin when piped; REPL when omitted.")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    image: ImagesOpt = None,
    system: SystemOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most tokens in an answer.")] = 2048,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps per block.")] = 32,
    block_length: Annotated[int, typer.Option("--block-length", min=1, help="Tokens per block.")] = 32,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0.0, max=1.0, help="Accept every token above this confidence.")
    ] = 0.95,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Sample among the k best (0 = all).")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    quant: QuantOpt = Quant.none,
    json_out: JsonOpt = False,
) -> None:
    """Ask about text, one-shot or in an interactive REPL (images arrive with the image tokenizer).

    Examples:  llada chat "What is a diffusion model?" --model tiny
               echo "hello" | llada chat --json
               llada chat            (REPL; /help lists its commands)
    """
    from ..pipelines.chat import ChatSession, ChatSettings
    from ..prompts import SYS_UNDERSTAND

    if image:
        raise NotAvailableYet(
            "images in chat are not available yet: the image tokenizer has not been built",
            "ask about text for now",
        )
    if quant is not Quant.none:
        raise NotAvailableYet(f"--quant {quant.value} is not available yet", "use --quant none")
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise UsageError("stdin held no prompt", 'pass a question: llada chat "..."')
    settings = ChatSettings(
        max_tokens, steps, block_length, threshold, temperature, top_k, top_p, seed, system or SYS_UNDERSTAND
    )
    settings.check()
    session = ChatSession(load_pipeline(model, device), settings)
    if prompt is None:
        from .repl import Repl

        Repl(session, json_out).loop()
        return
    answer_once(session, prompt, json_out)


def load_pipeline(model: str, device: str):
    from ..checkpoint.layout import components_for
    from ..device import resolve_device
    from ..hub import parse_model_ref, resolve
    from ..pipelines.chat import ChatPipeline

    out = output()
    ref = parse_model_ref(model)
    dev, dtype = resolve_device(device)
    with out.console.status(f"loading {ref.label} on {dev}") if out.interactive else nullcontext():
        root = resolve(ref, components_for("chat"))
        pipeline = ChatPipeline.load(root, dev, dtype)
    out.detail(f"loaded {ref.label} from {root} on {dev}")
    return pipeline


def answer_once(session, prompt: str, json_out: bool) -> None:
    """Ask one question; stream the answer (live on a terminal, by block in a pipe) or print JSON."""
    from .live import BlockStreamer, LiveView, TokenCanvas

    out = output()
    pipeline = session.pipeline
    prompt_len = len(pipeline.prompt_ids([*session.turns, _user(prompt)], session.settings.system))
    canvas = TokenCanvas(prompt_len, pipeline.tokenizer.ids["mask"], pipeline.stop_ids)
    if json_out:
        result = session.ask(prompt)
        out.json(result.record())
        return
    if out.interactive:
        with LiveView(out.console, canvas, pipeline.tokenizer.decode) as view:
            result = session.ask(prompt, view.on_step)
        out.data(result.answer)
    else:
        streamer = BlockStreamer(canvas, pipeline.tokenizer.decode)
        result = session.ask(prompt, streamer.on_step)
        streamer.finish(result.answer)
    s = result.stats
    out.detail(
        f"{result.generated_tokens} tokens, {s.forward_passes} forward passes, {s.seconds:.2f} s, "
        f"seed {result.seed}"
    )


def _user(text: str):
    from ..prompts import Turn

    return Turn("user", [text])


def save_transcript(session, path: Path, force: bool) -> None:
    """Write the transcript as JSON, atomically, never over an existing file without force."""
    import json

    from ..io_utils import atomic_write_text

    if path.exists() and not force:
        raise UsageError(f"{path} exists", "choose another name, or /save --force FILE")
    atomic_write_text(path, json.dumps(session.transcript(), ensure_ascii=False, indent=2) + "\n")
