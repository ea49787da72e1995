"""Bad inputs, lost work and trust: each case one clear message and the documented exit code."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llada_cli.cli.app import run
from llada_cli.errors import UsageError
from llada_cli.io.images import BadInput, load_image, open_image

from .conftest import batch_until_first_done

PACKAGE = Path(__file__).resolve().parent.parent / "llada_cli"
SMALL = ["--model", "tiny", "--size", "64x64"]


def cli(capsys, *args):
    code = run(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_unreadable_image(monkeypatch, tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(b"x")

    real_open = open

    def denied(file, *args, **kwargs):  # the tests run as root, who reads everything: simulate it
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(BadInput, match="permission denied"):
        load_image(str(path))


def test_a_prompt_longer_than_the_context(capsys):
    long_prompt = " ".join(f"w{i}" for i in range(6000))  # well over 8192 tokens on the tiny tokenizer
    code, _, err = cli(capsys, "chat", long_prompt, "--model", "tiny")
    assert code == 2 and "the context holds 8192" in err


def _break_shard(root):
    (root / "model-00002-of-00003.safetensors").unlink()


def _bad_header(root):
    (root / "model-00001-of-00003.safetensors").write_bytes(b"\xff" * 64)


def _no_field(root):
    cfg = json.loads((root / "config.json").read_text())
    del cfg["num_hidden_layers"]
    (root / "config.json").write_text(json.dumps(cfg))


def _wrong_type(root):
    cfg = json.loads((root / "config.json").read_text())
    cfg["num_hidden_layers"] = "three"
    (root / "config.json").write_text(json.dumps(cfg))


def _truncated_shard(root):
    shard = root / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def _no_token(root):
    data = json.loads((root / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|mask|>"]
    (root / "tokenizer.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_break_shard, "model-00002-of-00003.safetensors"),
        (_bad_header, "damaged safetensors header"),
        (_no_field, "num_hidden_layers"),
        (_wrong_type, "field num_hidden_layers is 'three', which is not int"),
        (_no_token, "<|mask|>"),
    ],
)
def test_damaged_checkpoints_are_runtime_errors_naming_the_problem(capsys, tiny_copy, damage, message):
    damage(tiny_copy)
    code, out, err = cli(capsys, "chat", "hello", "--model", str(tiny_copy), "--max-tokens", "8")
    assert code == 1 and out == "" and message in err


def test_a_damaged_model_stops_a_batch_once_with_exit_1_and_leaves_nothing(capsys, tiny_copy, tmp_path):
    _truncated_shard(tiny_copy)
    folder = tmp_path / "new" / "out"
    code, out, err = cli(
        capsys,
        "generate",
        "a",
        "b",
        "c",
        "--model",
        str(tiny_copy),
        "--size",
        "64x64",
        "--out-dir",
        str(folder),
    )
    assert code == 1 and out == "" and err.count("error:") == 1 and "model-00002-of-00003" in err
    assert not (tmp_path / "new").exists()  # no empty folder, no stray manifest


def test_errors_a_user_can_cause_are_never_internal(capsys, tmp_path, monkeypatch):
    (tmp_path / "out" / "manifest.jsonl").mkdir(parents=True)  # an unreadable manifest
    code, _, err = cli(capsys, "generate", "x", *SMALL, "--out-dir", str(tmp_path / "out"), "--resume")
    assert code == 2 and "manifest" in err and "is a folder" in err
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("LLADA_HOME", str(tmp_path / "file" / "home"))  # a LLADA_HOME nobody can make
    code, _, err = cli(capsys, "chat", "hi", "--model", "tiny")
    assert code == 1 and "cannot build the tiny checkpoint" in err and "LLADA_HOME" in err


def test_decode_checks_its_output_before_and_after_the_decoder(capsys, tmp_path, monkeypatch):
    from llada_cli.pipelines import decode as decode_mod

    code, _, _ = cli(capsys, "generate", "x", *SMALL, "--steps", "2", "-o", str(tmp_path / "a.png"))
    assert code == 0
    target = tmp_path / "gone" / "b.png"
    target.parent.mkdir()
    real = decode_mod.DecoderStack.decode

    def vanish(self, *args, **kwargs):
        target.parent.rmdir()  # the folder goes while the decoder runs
        (tmp_path / "gone").write_text("now a file")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(decode_mod.DecoderStack, "decode", vanish)
    code, out, err = cli(
        capsys, "decode", str(tmp_path / "a.codes.json"), "--model", "tiny", "-o", str(target)
    )
    assert code == 2 and out == "" and "cannot write to" in err


def test_global_flags_after_the_subcommand(capsys):
    code, _, err = cli(capsys, "generate", "x", *SMALL, "--cfg", "nan")
    assert code == 2 and "Traceback" not in err
    code = run(["generate", "x", *SMALL, "--cfg", "nan", "--debug", "--no-color"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "\x1b[" not in err
    code = run(["doctor", "--plan", "--assume-gpus", "80", "--command", "chat", "-q"])
    assert code == 0 and capsys.readouterr().err == ""
    code = run(["chat", "x", "--model", "tiny", "--system", "-q", "--max-tokens", "8", "--dry-run"])
    assert code == 0  # a flag's value is left where it is


def test_closed_stdout_and_a_closed_pipe(tmp_path):
    base = [sys.executable, "-m", "llada_cli"]
    closed = subprocess.run(
        [*base, "generate", "x", *SMALL, "--out-dir", str(tmp_path / "c")],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert closed.returncode == 1 and "stdout is closed" in closed.stderr and not (tmp_path / "c").exists()
    for cmd in (
        ["generate", "x", *SMALL, "-n", "3", "--steps", "2", "--out-dir", str(tmp_path / "p")],
        ["chat", "hello there", "--model", "tiny", "--max-tokens", "64"],
    ):
        proc = subprocess.Popen([*base, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.read(1)
        proc.stdout.close()  # `| head -c1`
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0 and "rror" not in err and "Traceback" not in err, err


def test_abandoned_tiny_builds_are_removed(tmp_path):
    from llada_cli.weights.tiny import _remove_abandoned_builds

    dead, alive = tmp_path / ".building-999999999-x", tmp_path / f".building-{os.getpid()}-y"
    dead.mkdir()
    alive.mkdir()
    _remove_abandoned_builds(tmp_path)
    assert not dead.exists() and alive.exists()


def test_absent_model_offline(capsys):
    code, _, err = cli(capsys, "chat", "hi", "--model", "someone/absent-model")
    assert code == 1 and "not in the local cache" in err


def test_unwritable_output_folder(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "generate", "x", *SMALL, "--out-dir", str(tmp_path / "file" / "sub"))
    assert code == 2 and "cannot write to" in err


def test_full_disk_fails_the_item_and_leaves_nothing_half_written(capsys, tmp_path, monkeypatch):
    import llada_cli.io.files as io_utils

    class FullDiskOs:
        """os for the atomic writer only: every fsync finds the disk full."""

        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fsync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_utils, "os", FullDiskOs())
    code, out, err = cli(capsys, "generate", "x", "y", *SMALL, "--out-dir", str(tmp_path))
    assert code == 3 and "No space left on device" in err, err
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*.part"))


def test_sigterm_stops_a_batch_with_130(tmp_path):
    proc, _, manifest = batch_until_first_done(tmp_path, [f"p{i}" for i in range(6)], 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "SIGTERM" in err and "Traceback" not in err
    for line in manifest.read_text().splitlines():
        json.loads(line)  # every line whole


def test_code_in_a_checkpoint_folder_never_runs(tiny_copy, tmp_path):
    marker = tmp_path / "EXECUTED"
    for name in (
        "modeling_llada2uni_moe.py",
        "configuration_llada2uni_moe.py",
        "__init__.py",
        "image_tokenizer/__init__.py",
    ):
        (tiny_copy / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    cfg = json.loads((tiny_copy / "config.json").read_text())
    assert "auto_map" in cfg  # the config still points at the remote code, as the real one does
    for args in (
        ["doctor", "--model", str(tiny_copy)],
        ["chat", "hi", "--model", str(tiny_copy), "--max-tokens", "8"],
        ["generate", "x", "--model", str(tiny_copy), "--size", "64x64", "-o", str(tmp_path / "o.png")],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "llada_cli", *args],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_every_torch_load_is_weights_only():
    calls = [
        (p, line)
        for p in PACKAGE.rglob("*.py")
        for line in p.read_text().splitlines()
        if "torch.load(" in line
    ]
    assert calls, "the package loads sigvq_embedding.pt with torch.load"
    assert all("weights_only=True" in line for _, line in calls), calls


# ---- property-based fuzzing (bounded) ---------------------------------------------------------------------

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".txt", ".jsonl", ".csv"]))
def test_prompt_files_never_crash(tmp_path, content, suffix):
    from llada_cli.io.promptfiles import read_prompts_file

    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    try:
        entries = read_prompts_file(path)
    except UsageError:
        return
    for entry in entries:
        assert entry.error or entry.fields.get("prompt", "").strip()


@FUZZ
@given(
    raw=st.dictionaries(
        st.sampled_from(["prompt", "seed", "width", "steps", "cfg", "output", "x"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8), st.booleans()),
    )
)
def test_item_fields_are_checked_or_refused(raw):
    from llada_cli.io.promptfiles import _check_fields

    try:
        checked = _check_fields(raw, "fuzz")
    except ValueError:
        return
    assert checked["prompt"].strip()


@FUZZ
@given(data=st.binary(max_size=2000))
def test_image_loader_on_random_bytes(data):
    try:
        loaded = open_image(data, "fuzz")
    except BadInput:
        return
    assert loaded.image.mode == "RGB"


@FUZZ
@given(png_prefix=st.integers(min_value=0, max_value=200))
def test_truncated_pngs_are_refused(png_prefix):
    data = (Path(__file__).resolve().parent.parent / "examples" / "images" / "shapes.png").read_bytes()
    try:
        open_image(data[:png_prefix], "cut")
    except BadInput:
        return
    pytest.fail("a truncated PNG was accepted")


@FUZZ
@given(text=st.text(max_size=40))
def test_model_refs_parse_or_refuse(text):
    from llada_cli.hub.resolve import parse_model_ref

    try:
        ref = parse_model_ref(text)
    except UsageError:
        return
    assert ref.tiny or ref.path or ref.repo_id


@FUZZ
@given(h=st.integers(1, 5000), w=st.integers(1, 5000), n=st.integers(1, 3))
def test_understanding_sizes_are_multiples_of_32_within_budget(h, w, n):
    from llada_cli.inputs.preprocess import MULTI_IMAGE_PIXELS, SINGLE_IMAGE_PIXELS, understanding_size

    th, tw = understanding_size(h, w, n)
    assert th % 32 == 0 and tw % 32 == 0 and th >= 32 and tw >= 32
    hi = (SINGLE_IMAGE_PIXELS if n == 1 else MULTI_IMAGE_PIXELS)[1]
    assert th * tw <= max(hi, 32 * max(th, tw))  # extreme aspects keep one row or column of 32
