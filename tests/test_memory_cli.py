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
    from llada_cli import planner

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
    from llada_cli.pipelines.text2image import ImageTokenGenerator

    monkeypatch.setattr(ImageTokenGenerator, "generate", _oom)
    code, out, err = cli(
        capsys, "generate", "a", "b", "--model", "tiny", "--size", "256x256", "--out-dir", str(tmp_path)
    )
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert "out of GPU memory in the backbone stage" in lines[-2] and "--quant nf4" in lines[-1]
    assert "Traceback" not in err and "image 2" not in err  # the batch stopped at the first


def test_out_of_memory_in_the_decoder_suggests_decoder_settings(capsys, tmp_path, monkeypatch):
    from llada_cli.sampling import flow

    monkeypatch.setattr(flow, "sample_turbo", _oom)
    monkeypatch.setattr("llada_cli.pipelines.decode.sample_turbo", _oom)
    code, _, err = cli(
        capsys, "generate", "a", "--model", "tiny", "--size", "256x256", "-o", str(tmp_path / "a.png")
    )
    assert code == 1 and "in the decoder stage" in err and "--decoder-quant nf4" in err
