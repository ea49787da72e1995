"""The CLI's manners: fast help, data on stdout, one-line errors with exit codes, doctor/models/download."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from llada_cli import __version__
from llada_cli.cli.app import run

from .test_hub import fake_hub_snapshot

HEAVY = ("torch", "diffusers", "PIL", "safetensors", "tokenizers", "huggingface_hub")


def cli(capsys, *args):
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["chat", "--help"], ["--version"]])
def test_help_imports_nothing_heavy(args):
    probe = (
        "import sys; from llada_cli.cli.app import run; code = run(sys.argv[1:]);"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_module_entry_point_and_version():
    proc = subprocess.run([sys.executable, "-m", "llada_cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == f"llada {__version__}\n" and proc.stderr == ""


def test_usage_errors_exit_2(capsys):
    code, out, err = cli(capsys, "generate", "--steps", "0")
    assert code == 2 and out == "" and "--steps" in err
    code, _, err = cli(capsys, "generate", "x", "--size", "64x64", "--width", "64")
    assert code == 2 and "choose one of" in err
    code, _, err = cli(capsys, "generate", "a", "b", "-o", "x.png", "--model", "tiny")
    assert code == 2 and "--output names one image" in err
    code, _, err = cli(capsys, "download", "tiny", "--component", "bogus")
    assert code == 2 and "unknown component 'bogus'" in err
    code, _, err = cli(capsys, "download", "tiny", "--component", "vae", "--for", "chat")
    assert code == 2 and "cannot be combined" in err


def test_doctor_checks_the_tiny_model(capsys):
    code, out, err = cli(capsys, "doctor", "--model", "tiny", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["llada"] == __version__ and report["packages"]["torch"]
    assert report["model"]["ok"] is True
    assert {c["component"] for c in report["model"]["components"]} >= {"backbone", "decoder-turbo", "vae"}
    backbone = next(c for c in report["model"]["components"] if c["component"] == "backbone")
    assert backbone["params"] > 1_000_000 and backbone["tensors"] == 418


def test_doctor_reports_a_damaged_model_and_exits_1(capsys, tiny_copy):
    (tiny_copy / "model-00002-of-00003.safetensors").unlink()
    code, out, _ = cli(capsys, "doctor", "--model", str(tiny_copy))
    assert code == 1
    bad = [line for line in out.splitlines() if "BAD" in line]
    assert len(bad) == 1 and "backbone" in bad[0] and "model-00002-of-00003.safetensors" in bad[0]


def test_doctor_for_an_uncached_hub_model(capsys):
    code, out, _ = cli(capsys, "doctor", "--model", "inclusionAI/LLaDA2.0-Uni-FP8", "--json")
    assert code == 1
    assert json.loads(out)["model"]["path"] is None


def test_download_tiny_then_models_lists_it(capsys, tiny_dir):
    code, out, _ = cli(capsys, "download", "tiny")
    assert code == 0
    path = out.strip()
    assert os.path.isfile(os.path.join(path, "config.json"))
    fake_hub_snapshot(
        __import__("pathlib").Path(os.environ["HF_HUB_CACHE"]), "inclusionAI/LLaDA2.0-Uni", tiny_dir
    )
    code, out, _ = cli(capsys, "models", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert by_name["tiny"]["source"] == "tiny" and by_name["tiny"]["path"] == path
    assert by_name["inclusionAI/LLaDA2.0-Uni"]["known"] is True
    assert by_name["inclusionAI/LLaDA2.0-Uni"]["size_bytes"] > 1_000_000


def test_download_offline_miss_exits_1_with_a_hint(capsys):
    code, out, err = cli(capsys, "download", "inclusionAI/LLaDA2.0-Uni", "--for", "chat")
    assert code == 1 and out == ""
    assert "not in the local cache" in err and "hint:" in err


def test_debug_shows_the_traceback(capsys):
    code, _, err = cli(capsys, "--debug", "download", "inclusionAI/LLaDA2.0-Uni")
    assert code == 1 and "Traceback" in err


def test_no_color_means_no_escape_codes(monkeypatch):
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "llada_cli", "chat", "hi", "--quant", "nf4"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1 and "\x1b[" not in proc.stderr
    env.pop("NO_COLOR")
    proc = subprocess.run(
        [sys.executable, "-m", "llada_cli", "chat", "hi", "--quant", "nf4"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "\x1b[" in proc.stderr  # FORCE_COLOR alone does colour, so the check above can fail


def test_sigint_during_the_tiny_build_exits_130_and_leaves_no_half_built_model(tmp_path):
    import signal
    import time

    env = {**os.environ, "LLADA_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llada_cli", "download", "tiny"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    staging = tmp_path / "home" / "tiny"
    deadline = time.time() + 60
    while time.time() < deadline and not (staging.is_dir() and any(staging.glob(".building-*/ckpt"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == "" and "interrupted" in err and "Traceback" not in err
    assert not [p for p in staging.iterdir() if p.name.startswith(".building-") or p.name.startswith("bf16")]


def test_a_usage_error_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (
        ["generate", "a", "b", "-o", "x.png", "--model", "tiny"],
        ["generate", "a", "--resume", "--model", "tiny"],
        ["edit", "-i", "missing.png", "x", "--model", "tiny"],
    ):
        assert run(args) == 2
    assert list(tmp_path.iterdir()) == []
