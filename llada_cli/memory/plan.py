"""The memory plan of a run: what it will do, sized by the planner (pure arithmetic over the configs),
turned into where the engine puts each stage and what it tells the user about it.

On a GPU every run follows the plan: a split or offloaded backbone, phases (backbone, then decoder)
instead of everything resident, a decoder streamed through the GPU. The choice is always said (the
placement's `notes`), never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    """What a run will do, as the planner sizes it."""

    command: str  # chat, generate, edit or interleave
    model: str
    quant: str = "none"
    decoder_quant: str = "none"
    size: tuple[int, int] | int = 1024
    decoder: str = "turbo"
    max_vram: float | None = None
    images: int = 0
    gpus: list[int] | None = None  # free bytes per GPU to assume instead of the machine's (doctor --plan)


@dataclass(frozen=True, kw_only=True)
class RunPlacement:
    """What the engine needs to know from the plan, and what to tell the user about it."""

    layer_devices: list[str] | None = None  # backbone: one device per layer ("cpu": experts on the host)
    phased: bool = False  # backbone for every item first, then released, then the decoder
    decoder_offload: bool = False
    device: str | None = None  # the backbone's main GPU in the plan (None: the one asked for)
    stage_devices: dict[str, str] = field(default_factory=dict)  # the decoder's and image tokenizer's
    notes: list[tuple[str, str]] = field(default_factory=list)  # (info | warn | detail, text)


def _model_info(model: str, command: str, decoder: str):
    """Sizes from the configs: the registry's real configs for a known Hub repo not on disk, else the
    checkpoint folder's own configs (tiny is built, a local folder read; an unknown repo is fetched)."""
    from ..checkpoint.layout import components_for
    from ..errors import LladaError
    from ..hub.resolve import parse_model_ref, resolve
    from ..weights.registry import KNOWN_CHECKPOINTS
    from . import planner

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


def make_plan(request: PlanRequest, device: str):
    """The plan for this run on this machine (`request.gpus`: free bytes per GPU to assume instead, taken
    to be FP8-capable). Device names in the plan are the machine's own (`cuda:1` stays `cuda:1`)."""
    from ..runtime.quant import fp8_supported
    from . import planner

    r = request
    quant, gpus = r.quant, r.gpus
    info, fp8_checkpoint = _model_info(r.model, r.command, r.decoder)
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
        r.command, r.size, r.decoder, quant=quant, decoder_quant=r.decoder_quant, images=r.images
    )
    plan = planner.plan(info, settings, gpus, host, r.max_vram)
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


def placement_for(plan, command: str) -> RunPlacement:
    """Turn the plan into the pipelines' settings; `notes` says what was chosen and why."""
    from ..errors import OutOfMemory

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
    notes = []
    if phased and command == "interleave":
        notes.append(("warn", "the memory plan wants stages loaded in turn, but interleave keeps the backbone "
                      "and the decoder together: it may run out of memory (try --quant nf4 --decoder-quant nf4)"))  # fmt: skip
    if plan.strategy == "offload":
        notes.append(("warn", f"memory plan: {plan.reason}"))
    elif plan.strategy != "resident":
        notes.append(("info", f"memory plan: {plan.strategy}: {plan.reason}"))
    notes += [("detail", f"  faster: {hint}") for hint in plan.suggestions]
    others = {p.stage: p.device for p in plan.stages if p.stage != "backbone"}
    return RunPlacement(
        layer_devices=layers,
        phased=phased,
        decoder_offload=bool(decoder and decoder.offload),
        device=main,
        stage_devices=others,
        notes=notes,
    )


def planned_placement(request: PlanRequest, device: str) -> RunPlacement:
    """On a GPU, follow the plan; on the CPU say so for a real model (the tiny one is meant for it)."""
    from ..hub.resolve import parse_model_ref
    from ..runtime.quant import require_fp8

    require_fp8(request.quant, device)  # before anything loads
    if request.command == "decode":  # the decoder stack alone: no backbone to place
        return RunPlacement()
    if device.startswith("cuda"):
        return placement_for(make_plan(request, device), request.command)
    if not parse_model_ref(request.model).tiny:
        note = ("warn", "no GPU in use: running on the CPU in fp32, which is very slow for the real model")
        return RunPlacement(notes=[note])
    return RunPlacement()
