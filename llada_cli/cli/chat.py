"""`llada chat`: one answer on stdout, or the interactive REPL."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Annotated

import typer

from ..errors import UsageError
from ..io.files import read_stdin_text
from ..limits import check_flags
from ..weights.registry import DEFAULT_MODEL
from .options import (
    ImagesOpt,
    JsonOpt,
    ModelOpt,
    RemoteFlags,
    RunFlags,
    SamplerFlags,
    SeedOpt,
    SystemOpt,
    remote_options,
    run_options,
    sampler_options,
)
from .runtime import output


@sampler_options(steps=32)
@run_options(decoder=False)
@remote_options(batch=False)
def chat(
    prompt: Annotated[
        str | None, typer.Argument(help="Question; read from stdin when piped; REPL when omitted.")
    ] = None,
    model: ModelOpt = None,
    image: ImagesOpt = None,
    system: SystemOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most tokens in an answer.")] = 2048,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    sampler: SamplerFlags = None,
    run: RunFlags = None,
    remote: RemoteFlags = None,
) -> None:
    """Ask about text and images, one-shot or in an interactive REPL.

    Examples:  llada chat "What is a diffusion model?" --model tiny
               llada chat --image photo.jpg "What is in this picture?"
               cat photo.png | llada chat --image - "Describe it" --json
               llada chat            (REPL; /help lists its commands, /image attaches a picture)
               llada chat --server http://127.0.0.1:8000 "Hello"
    """
    from ..inputs.prompts import SYS_UNDERSTAND
    from ..memory.plan import PlanRequest
    from ..pipelines.chat import ChatSession
    from ..settings import ChatSettings

    check_flags(locals())
    server = remote.connect(run)
    settings = ChatSettings(
        sampler=sampler.settings(), max_tokens=max_tokens, seed=seed, system=system or SYS_UNDERSTAND
    )
    options, sources = run.options(), image or []
    given_model, model = model, model or DEFAULT_MODEL
    plan = PlanRequest(
        command="chat", model=model, quant=options.quant, max_vram=options.max_vram, images=len(sources)
    )
    if run.dry_run:
        from .plan import start_engine

        start_engine(model, options, plan, json_out, dry=True)
    prompt, images = _inputs(prompt, sources)
    if server is not None:
        from ..server.session import RemoteSession

        session = RemoteSession(server.serving(given_model), settings)
    else:
        session = ChatSession(load_engine(model, options, plan), settings)
    if prompt is None:
        from .repl import Repl

        Repl(session, json_out, staged=images).loop()
        return
    from .answers import answer_once

    answer_once(session, prompt, json_out, images)



def _inputs(prompt: str | None, sources: list[str]):
    """The question (argument or piped stdin) and the images, each read and checked before any load."""
    from ..io.images import load_image, read_stdin_image

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
    return prompt, [load_image(src, stdin_image) for src in sources]


def load_engine(model: str, options, plan):
    """The engine with its backbone loaded (the REPL's first answer should not wait for it)."""
    from .plan import start_engine

    out = output()
    engine = start_engine(model, options, plan)
    with (
        out.console.status(f"loading {engine.label} on {engine.device}") if out.interactive else nullcontext()
    ):
        engine.model  # noqa: B018  (load now)
    out.detail(f"loaded {engine.label} from {engine.root()} on {engine.device}")
    return engine
