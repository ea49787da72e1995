"""The memory plan in the CLI: `--dry-run`, `--max-vram`, `doctor --plan`, and what a run does with it.

The plan is pure arithmetic over the configs (llada_cli.memory.planner). On a GPU every run follows it: a
split or offloaded backbone, phases (backbone, then decoder) instead of everything resident, a decoder
streamed through the GPU. The choice is always said on stderr, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from .runtime import output


@dataclass
class RunPlacement:
    """What a pipeline needs to know from the plan."""

    layer_devices: list[str] | None = None  # backbone: one device per layer ("cpu": experts on the host)
    phased: bool = False  # backbone for every item first, then released, then the decoder
    decoder_offload: bool = False
    device: str | None = None  # the backbone's main GPU in the plan (None: the one asked for)
    stage_devices: dict[str, str] | None = None  # where the other stages run (decoder, image tokenizer)


def _model_info(model: str, command: str, decoder: str):
    """Sizes from the configs: the registry's real configs for a known Hub repo not on disk, else the
    checkpoint folder's own configs (tiny is built, a local folder read; an unknown repo is fetched)."""
    from ..checkpoint.layout import components_for
    from ..errors import LladaError
    from ..hub.resolve import parse_model_ref, resolve
    from ..memory import planner
    from ..weights.registry import KNOWN_CHECKPOINTS

    ref = parse_model_ref(model)
    if ref.repo_id in KNOWN_CHECKPOINTS:
        try:
            root = resolve(ref, ("backbone",), download=False)
        except LladaError:  # not in the cache: the recovered real configs are the same files
            return planner.real_model(), ref.repo_id.endswith("-FP8")
    else:
        root = resolve(ref, components_for(command, decoder))
    from ..checkpoint.components import read_config

    return planner.checkpoint_model(root, decoder), read_config(root, "backbone").fp8_experts


def make_plan(
    command: str,
    model: str,
    device: str,
    quant: str,
    decoder_quant: str = "none",
    size: tuple[int, int] | int = 1024,
    decoder: str = "turbo",
    max_vram: float | None = None,
    images: int = 0,
    gpus: list[int] | None = None,
):
    """The plan for this run on this machine (`gpus`: free bytes per GPU to assume instead, taken to be
    FP8-capable). Device names in the plan are the machine's own (`cuda:1` stays `cuda:1`)."""
    from ..memory import planner
    from ..runtime.quant import fp8_supported

    if max_vram is not None and max_vram <= 0:
        raise UsageError("--max-vram must be a positive number of GB", "e.g. --max-vram 20")
    info, fp8_checkpoint = _model_info(model, command, decoder)
    found, host = planner.detect()
    indices = list(range(len(found)))
    fp8_gpu = gpus is not None or fp8_supported(device if device.startswith("cuda") else "cuda")
    if gpus is None:
        gpus = [] if device == "cpu" else found
        if device.startswith("cuda:"):  # one GPU asked for: plan for that one alone
            indices = [int(device.partition(":")[2])]
            gpus = [found[indices[0]]]
    if fp8_checkpoint and quant in ("none", "fp8"):
        quant = "fp8" if fp8_gpu else "none"  # kept in FP8 where the GPU can, else dequantized at load
    settings = planner.Settings(
        command, size, decoder, quant=quant, decoder_quant=decoder_quant, images=images
    )
    plan = planner.plan(info, settings, gpus, host, max_vram)
    return _relabel(plan, {f"cuda:{i}": f"cuda:{n}" for i, n in enumerate(indices) if i != n})


def _relabel(plan, names: dict[str, str]):
    """The planner numbers the GPUs it was given from 0; give them back their machine names."""
    if not names:
        return plan
    for p in plan.stages:
        p.device = names.get(p.device, p.device)
        p.layer_devices = [names.get(d, d) for d in p.layer_devices] if p.layer_devices else None
    plan.peak = {names.get(d, d): v for d, v in plan.peak.items()}
    return plan


def show_plan(plan, json_out: bool) -> None:
    from ..memory.planner import plan_to_dict, render_plan

    out = output()
    if json_out:
        out.json({"plan": plan_to_dict(plan)})
    else:
        for line in render_plan(plan):
            out.data(line)


def placement_for(plan, command: str) -> RunPlacement:
    """Turn the plan into the pipelines' settings, and say on stderr what was chosen and why."""
    from ..errors import OutOfMemory

    out = output()
    stages = {p.stage: p for p in plan.stages}
    if plan.strategy == "does-not-fit":
        raise OutOfMemory(f"this run does not fit: {plan.reason}", "; ".join(plan.suggestions) or None)
    on_cpu = [p.stage for p in plan.stages if p.device == "cpu" and not p.offload]
    if on_cpu:  # llada does not run single stages on the CPU next to a GPU
        raise OutOfMemory(
            f"the GPU is too small for the {', '.join(on_cpu)} stage: the memory plan would run it on the CPU",
            "; ".join(plan.suggestions) or "a smaller --size, --quant nf4, or --device cpu for everything",
        )
    backbone, decoder = stages["backbone"], stages.get("decoder")
    main = backbone.device  # a GPU here: a backbone the plan puts on the CPU was refused above
    layers = backbone.layer_devices
    if layers and all(d == main for d in layers):
        layers = None
    phased = plan.strategy in ("phased", "split", "offload")
    if phased and command == "interleave":
        out.warn("the memory plan wants stages loaded in turn, but interleave keeps the backbone and the decoder "
                 "together: it may run out of memory (try --quant nf4 --decoder-quant nf4)")  # fmt: skip
    others = {p.stage: p.device for p in plan.stages if p.stage != "backbone"}
    run = RunPlacement(layers, phased, bool(decoder and decoder.offload), main, others)
    if plan.strategy == "offload":
        out.warn(f"memory plan: {plan.reason}")
    elif plan.strategy != "resident":
        out.info(f"memory plan: {plan.strategy}: {plan.reason}")
    for hint in plan.suggestions:
        out.detail(f"  faster: {hint}")
    return run


def planned_placement(command: str, model: str, device: str, *args, **kwargs) -> RunPlacement:
    """On a GPU, follow the plan; on the CPU say so for a real model (the tiny one is meant for it)."""
    from ..hub.resolve import parse_model_ref
    from ..runtime.quant import require_fp8

    require_fp8(args[0], device)  # before anything loads

    if device.startswith("cuda"):
        return placement_for(make_plan(command, model, device, *args, **kwargs), command)
    if not parse_model_ref(model).tiny:
        output().warn("no GPU in use: running on the CPU in fp32, which is very slow for the real model")
    return RunPlacement()


def dry_run(command: str, model: str, device: str, json_out: bool, *args, **kwargs) -> None:
    """Print the plan and stop with exit 0: nothing is loaded and no file is written."""
    import typer

    from ..runtime.device import resolve_device
    from ..runtime.quant import require_fp8

    dev, _ = resolve_device(device)
    require_fp8(args[0], dev)  # the plan of a run that would be refused is that refusal
    show_plan(make_plan(command, model, dev, *args, **kwargs), json_out)
    raise typer.Exit(0)
