"""`llada models`, `llada download` and `llada doctor`: what is on disk, fetch it, check it."""

from __future__ import annotations

from typing import Annotated

import typer

from ..checkpoint.layout import COMPONENTS, components_for
from ..errors import EXIT_MODEL_UNAVAILABLE, UsageError
from ..io.files import display_path
from ..weights.registry import DEFAULT_MODEL
from .options import Decoder, DecoderQuant, DecoderQuantOpt, JsonOpt, MaxVramOpt, Quant, QuantOpt
from .runtime import output


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def models(json_out: JsonOpt = False) -> None:
    """List the models in the HF cache and the tiny checkpoints llada has built, with sizes."""
    from dataclasses import asdict

    from ..hub.cache import cached_models

    out = output()
    found = cached_models()
    if json_out:
        for m in found:
            out.json(asdict(m))
        return
    if not found:
        out.info(
            "no models cached yet; try `llada download tiny` or `llada download inclusionAI/LLaDA2.0-Uni`"
        )
        return
    width = max(len(m.name) for m in found)
    for m in found:
        mark = "" if m.known else "  (not a LLaDA2.0-Uni checkpoint)"
        out.data(f"{m.name:<{width}}  {_human_bytes(m.size_bytes):>9}  {m.source:<4}  {m.path}{mark}")


ComponentOpt = Annotated[
    list[str] | None,
    typer.Option("--component", "-c", help=f"Only these components: {', '.join(COMPONENTS)}."),
]
ForOpt = Annotated[
    str | None,
    typer.Option("--for", help="Only what a command needs: chat, generate, edit or interleave."),
]


def download(
    model: Annotated[str, typer.Argument(help="Hub repo id (repo@revision allowed), or tiny / tiny-fp8.")],
    component: ComponentOpt = None,
    for_command: ForOpt = None,
    decoder: Annotated[
        Decoder, typer.Option("--decoder", help="Which decoder --for fetches.")
    ] = Decoder.turbo,
) -> None:
    """Fetch a model (or some of its components) into the cache; prints the local folder."""
    from ..hub.resolve import parse_model_ref, resolve

    if component and for_command:
        raise UsageError("--component and --for cannot be combined", "pick one way to choose components")
    unknown = [c for c in component or [] if c not in COMPONENTS]
    if unknown:
        raise UsageError(f"unknown component {unknown[0]!r}", f"choose from {', '.join(COMPONENTS)}")
    if for_command and for_command not in ("chat", "generate", "edit", "interleave"):
        raise UsageError(f"--for {for_command!r} is not a command", "use chat, generate, edit or interleave")
    names = tuple(component) if component else components_for(for_command or "all", decoder.value)
    out = output()
    if not out.interactive:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    ref = parse_model_ref(model)
    out.info(f"fetching {', '.join(names)} of {ref.label}")
    root = resolve(ref, names, download=True)
    out.data(display_path(root))


def doctor(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Also check this model's files.")] = None,
    json_out: JsonOpt = False,
    plan: Annotated[bool, typer.Option("--plan", help="Print the memory plan for a run instead.")] = False,
    command: Annotated[
        str, typer.Option("--command", help="With --plan: chat, generate, edit, interleave.")
    ] = "generate",
    size: Annotated[int, typer.Option("--size", help="With --plan: output side in pixels.")] = 1024,
    quant: QuantOpt = Quant.none,
    decoder_quant: DecoderQuantOpt = DecoderQuant.none,
    max_vram: MaxVramOpt = None,
    assume_gpus: Annotated[
        str | None,
        typer.Option("--assume-gpus", help="With --plan: plan for these GPUs, GB free each (24,24)."),
    ] = None,
) -> None:
    """Report versions, GPUs, caches and, with --model, whether every component is present and intact.

    With --plan: what a run would put where (resident, phased, split, offload or CPU), and why."""
    from ..diagnostics import model_report, system_report
    from ..limits import check_flags

    check_flags({"max_vram": max_vram})
    if plan:
        check_size_side(size)
    out = output()
    if plan:
        _doctor_plan(
            model or DEFAULT_MODEL,
            command,
            size,
            quant.value,
            decoder_quant.value,
            max_vram,
            assume_gpus,
            json_out,
        )
        return
    report = system_report()
    checked = model_report(model) if model else None
    if json_out:
        out.json({**report, "model": checked.as_dict() if checked else None})
    else:
        _render_doctor(report, checked)
    if checked and not checked.ok:
        raise typer.Exit(EXIT_MODEL_UNAVAILABLE)


def _render_doctor(report: dict, checked) -> None:
    out = output()
    lines = [f"llada {report['llada']}  python {report['python']}  {report['platform']}"]
    lines += [f"  {name:<16} {ver or 'not installed'}" for name, ver in report["packages"].items()]
    lines.append(f"cuda: {report['cuda'] or 'none (CPU build of torch)'}")
    for g in report["gpus"]:
        lines.append(
            f"  gpu {g['index']}: {g['name']} (sm {g['capability']}), "
            f"{_human_bytes(g['free_bytes'])} free of {_human_bytes(g['total_bytes'])}"
        )
    if not report["gpus"]:
        lines.append("  no GPU visible: generation will be very slow on CPU")
    lines.append(f"hf cache: {report['hf_hub_cache']}" + ("  (offline)" if report["hf_hub_offline"] else ""))
    lines.append(f"llada home: {report['llada_home']}")
    if checked:
        lines.append(f"model {checked.model}: {checked.path or 'not in the cache'}")
        for c in checked.components:
            size = f", {_human_bytes(c.bytes)}" if c.ok else ""
            lines.append(f"  {'ok ' if c.ok else 'BAD'} {c.component:<16} {c.detail}{size}")
    for line in lines:
        out.data(line)


def check_size_side(size: int) -> None:
    """`doctor --plan --size N`: an N x N output, by the same rule as every --size."""
    from ..limits import check_size

    check_size(size, size, what="--size")


def _doctor_plan(model, command, size, quant, decoder_quant, max_vram, assume_gpus, json_out) -> None:
    from ..memory.plan import PlanRequest, make_plan
    from ..memory.planner import GB, STAGES
    from .plan import show_plan

    if command not in STAGES:
        raise UsageError(f"--command {command!r} is not one of {', '.join(STAGES)}")
    from ..limits import check

    gpus = None
    if assume_gpus is not None:
        try:
            sizes = [float(g) for g in assume_gpus.split(",") if g.strip()]
        except ValueError:
            raise UsageError(
                f"--assume-gpus {assume_gpus!r} is not a list of GB", "e.g. --assume-gpus 24,24"
            ) from None
        gpus = [int(check("max_vram", g, f"--assume-gpus {assume_gpus!r}: a GPU of") * GB) for g in sizes]
    device = "cuda" if gpus else "cpu" if gpus == [] else "auto"
    request = PlanRequest(
        command=command,
        model=model,
        quant=quant,
        decoder_quant=decoder_quant,
        size=size,
        max_vram=max_vram,
        gpus=gpus,
    )
    plan = make_plan(request, device)
    show_plan(plan, json_out)
