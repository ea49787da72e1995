"""The memory plan in the CLI: `--dry-run`, `doctor --plan`, and the plan's notes on stderr."""

from __future__ import annotations

from ..memory.plan import PlanRequest, RunPlacement
from .runtime import output


def show_plan(plan, json_out: bool) -> None:
    from ..memory.planner import plan_to_dict, render_plan

    out = output()
    if json_out:
        out.json({"plan": plan_to_dict(plan)})
    else:
        for line in render_plan(plan):
            out.data(line)


def say_placement(placement: RunPlacement) -> RunPlacement:
    """The plan's notes on stderr: what was chosen and why (details with -v)."""
    out = output()
    for level, text in placement.notes:
        {"warn": out.warn, "info": out.info, "detail": out.detail}[level](text)
    return placement


def dry_run(request: PlanRequest, device: str, json_out: bool) -> None:
    """Print the plan and stop with exit 0: nothing is loaded and no file is written."""
    import typer

    from ..memory.plan import make_plan
    from ..runtime.device import resolve_device
    from ..runtime.quant import require_fp8

    dev, _ = resolve_device(device)
    require_fp8(request.quant, dev)  # the plan of a run that would be refused is that refusal
    show_plan(make_plan(request, dev), json_out)
    raise typer.Exit(0)


def start_engine(model: str, options, plan: PlanRequest, json_out: bool = False, dry: bool = False):
    """The engine for a command (after `--dry-run` would have stopped), with the plan said on stderr."""
    from ..engine import Engine
    from .options import show_quant_summary

    if dry:
        dry_run(plan, options.device, json_out)
    show_quant_summary(options)
    engine = Engine(model, options, plan=plan)
    say_placement(engine.placement)
    return engine
