"""The memory plan in the CLI (--dry-run, doctor --plan) and out-of-memory errors that name the stage."""

from __future__ import annotations

import json

import pytest
import torch

from .test_cli import cli


def test_dry_run_prints_the_plan_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(
        capsys, "generate", "a fox", "--model", "tiny", "--size", "256x256", "--dry-run", "--json"
    )
    assert code == 0 and err == ""
    plan = json.loads(out)["plan"]
    assert [s["stage"] for s in plan["stages"]] == ["backbone", "sigvq", "decoder", "vae"]
    assert plan["strategy"] == "cpu" and "CPU" in plan["reason"]  # this machine has no GPU, and says so
    assert list(tmp_path.iterdir()) == []
    code, out, _ = cli(capsys, "edit", "x.png", "make it blue", "--model", "tiny", "--dry-run")
    assert code == 0 and out.splitlines()[1].startswith("image_tokenizer")
    code, out, _ = cli(capsys, "chat", "hi", "--dry-run", "--quant", "nf4")  # the real model: no download
    assert code == 0 and "backbone" in out and "10.6" in out  # nf4 experts: about 10.7 GB


@pytest.mark.parametrize(
    "gpus,strategy",
    [("80", "resident"), ("40", "phased"), ("24,24", "split"), ("16", "offload")],
)
def test_doctor_plan_for_assumed_gpus(capsys, gpus, strategy, monkeypatch):
    from llada_cli.memory import planner

    monkeypatch.setattr(planner, "detect", lambda: ([], 200 * planner.GB))  # plenty of host RAM
    code, out, _ = cli(capsys, "doctor", "--plan", "--assume-gpus", gpus, "--json")
    assert code == 0
    plan = json.loads(out)["plan"]
    assert plan["strategy"] == strategy
    if strategy == "split":
        layers = next(s for s in plan["stages"] if s["stage"] == "backbone")["layer_devices"]
        assert set(layers) == {"cuda:0", "cuda:1"} and len(layers) == 20
    if strategy == "offload":
        assert any(s["offload"] or "cpu" in (s["layer_devices"] or []) for s in plan["stages"])


def test_bad_plan_options_are_usage_errors(capsys):
    assert cli(capsys, "doctor", "--plan", "--assume-gpus", "lots")[0] == 2
    assert cli(capsys, "doctor", "--plan", "--command", "paint")[0] == 2
    assert cli(capsys, "generate", "a fox", "--model", "tiny", "--max-vram", "0", "--dry-run")[0] == 2


def _oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_in_the_backbone_names_it_and_stops_the_batch(capsys, tmp_path, monkeypatch):
    from llada_cli.pipelines.text2image import TextToImage

    monkeypatch.setattr(TextToImage, "generate", _oom)
    code, out, err = cli(
        capsys, "generate", "a", "b", "--model", "tiny", "--size", "256x256", "--out-dir", str(tmp_path)
    )
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert "out of GPU memory in the backbone stage" in lines[-2] and "--quant nf4" in lines[-1]
    assert "Traceback" not in err and "image 2" not in err  # the batch stopped at the first


def test_out_of_memory_in_the_decoder_suggests_decoder_settings(capsys, tmp_path, monkeypatch):
    from llada_cli.pipelines import decode  # imported first: it binds sample_turbo at import

    monkeypatch.setattr(decode, "sample_turbo", _oom)
    code, _, err = cli(
        capsys, "generate", "a", "--model", "tiny", "--size", "256x256", "-o", str(tmp_path / "a.png")
    )
    assert code == 1 and "in the decoder stage" in err and "--decoder-quant nf4" in err


from llada_cli.memory.plan import PlanRequest  # noqa: E402


def _gpus(monkeypatch, free_gb: list[float], fp8: bool = False):
    from llada_cli.memory import planner
    from llada_cli.runtime import quant

    monkeypatch.setattr(planner, "detect", lambda: ([int(g * planner.GB) for g in free_gb], 500 * planner.GB))
    monkeypatch.setattr(quant, "FP8_KEEP", "always" if fp8 else "never")


def test_a_chosen_gpu_keeps_its_name_in_the_plan(monkeypatch):
    from llada_cli.memory.plan import make_plan

    _gpus(monkeypatch, [80, 30])
    plan = make_plan(PlanRequest(command="generate", model="inclusionAI/LLaDA2.0-Uni"), "cuda:1")
    assert plan.strategy == "offload" and set(plan.peak) == {"cuda:1", "cpu"}
    backbone = next(s for s in plan.stages if s.stage == "backbone")
    assert set(backbone.layer_devices) == {"cuda:1", "cpu"}


def test_the_plan_becomes_pipeline_settings(monkeypatch):
    from llada_cli.memory.plan import make_plan, placement_for

    _gpus(monkeypatch, [10, 24, 24])
    split = placement_for(
        make_plan(PlanRequest(command="generate", model="inclusionAI/LLaDA2.0-Uni"), "cuda"), "generate"
    )
    assert split.phased  # the decoder loads after the backbone is freed
    assert split.device == split.layer_devices[0] and len(set(split.layer_devices)) >= 2
    assert split.stage_devices["decoder"] == "cuda:1"  # the freest GPU takes the other stages
    _gpus(monkeypatch, [80])
    resident = placement_for(
        make_plan(PlanRequest(command="chat", model="inclusionAI/LLaDA2.0-Uni"), "cuda"), "chat"
    )
    assert resident.layer_devices is None and not resident.phased and resident.device == "cuda:0"


def test_fp8_checkpoints_are_planned_as_fp8_only_on_fp8_gpus(monkeypatch):
    from llada_cli.memory.plan import make_plan

    sizes = {}
    for fp8 in (True, False):
        _gpus(monkeypatch, [80], fp8=fp8)
        plan = make_plan(PlanRequest(command="chat", model="inclusionAI/LLaDA2.0-Uni-FP8"), "cuda")
        sizes[fp8] = next(s for s in plan.stages if s.stage == "backbone").weights
    assert 17.0e9 < sizes[True] < 17.6e9 and 32.4e9 < sizes[False] < 32.9e9


def test_a_gpu_too_small_for_a_stage_is_refused_not_run_on_the_cpu(monkeypatch):
    from llada_cli.errors import OutOfMemory
    from llada_cli.memory.plan import placement_for
    from llada_cli.memory.planner import Placement, Plan

    plan = Plan("offload", [Placement("backbone", "cuda:0", 1, 1), Placement("vae", "cpu", 1, 1)], {}, "x")
    with pytest.raises(OutOfMemory, match="vae"):
        placement_for(plan, "generate")


def test_dry_run_of_an_impossible_fp8_run_is_its_refusal(capsys):
    code, out, err = cli(capsys, "generate", "a fox", "--model", "tiny", "--quant", "fp8", "--dry-run")
    assert code == 2 and out == "" and "compute capability 8.9" in err
