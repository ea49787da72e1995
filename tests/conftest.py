"""Shared fixtures: tiny checkpoints built once per session, and caches pointed at temporary folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, tmp_path, monkeypatch):
    """No test touches the user's caches or the network; each test gets an empty HF cache."""
    monkeypatch.setenv("LLADA_HOME", str(tmp_path_factory.getbasetemp() / "llada-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from llada_cli.weights.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "bf16", "bf16", seed=0)


@pytest.fixture(scope="session")
def tiny_fp8_dir(tmp_path_factory) -> Path:
    from llada_cli.weights.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "fp8", "fp8", seed=0)


@pytest.fixture
def tiny_copy(tiny_dir, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, dest)
    return dest


def batch_until_first_done(out_dir: Path, prompts: list[str], seed: int, text: bool = True):
    """Start `llada generate` on tiny as a real process and return once its first image is done.

    Returns (process, command, manifest path) so a test can interrupt it and resume."""
    import subprocess
    import sys
    import time

    cmd = [
        sys.executable,
        "-m",
        "llada_cli",
        "generate",
        *prompts,
        "--model",
        "tiny",
        "--size",
        "64x64",
        "--seed",
        str(seed),
        "--out-dir",
        str(out_dir),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text)
    manifest = Path(out_dir) / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or '"done"' not in manifest.read_text()):
        time.sleep(0.02)
    return proc, cmd, manifest


class ScriptedBackbone:
    """A backbone stand-in for control-flow tests: at absolute position p it is sure of
    `script[p - prompt_len]`, then of end-of-text; with `image_fallback` an image code is always the next
    best, so a phase restricted to image codes still yields codes. Records the rows of every step."""

    def __init__(
        self,
        real,
        script: list[int],
        eos: int,
        prompt_len: int | None = None,
        cfg=None,
        image_fallback: bool = False,
    ):
        self.real, self.cfg, self.lm_head = real, cfg or real.cfg, real.lm_head
        self.script, self.eos, self.prompt_len = script, eos, prompt_len
        self.image_fallback = image_fallback
        self.rows_seen: list[int] = []

    def make_cache(self, batch, max_len):
        return self.real.make_cache(batch, max_len)

    def __call__(self, ids, pos, mask=None, cache=None, commit=False, logits_from=0):
        import torch

        if commit:
            cache.length += ids.shape[1]
            return torch.zeros(ids.shape[0], 0, self.cfg.vocab_size)
        self.rows_seen.append(ids.shape[0])
        out = torch.full((ids.shape[0], ids.shape[1], self.cfg.vocab_size), -30.0)
        for j, p in enumerate(pos[0].tolist()):
            i = p - self.prompt_len
            out[:, j, self.script[i] if 0 <= i < len(self.script) else self.eos] = 30.0
            if self.image_fallback:
                out[:, j, self.cfg.image_token_offset + (p % 7)] = 20.0
        return out


def engine_for(root, **options):
    """An engine over a checkpoint folder on the CPU (the tests' tiny build)."""
    from llada_cli.engine import Engine
    from llada_cli.settings import RunOptions

    return Engine(str(root), RunOptions(device="cpu", **options))


def script_engine(engine, answer: str):
    """The engine's backbone replaced by one that writes `answer` (then end of text) after any prompt."""
    from llada_cli.inputs.prompts import chat_prompt, encode

    tok = engine.tokenizer
    fake = ScriptedBackbone(engine.model, tok.encode(answer), tok.ids["eos"])
    engine._model = fake
    original = engine.answer

    def answer_with_prompt_len(turns, settings, on_step=None):
        fake.prompt_len = len(encode(chat_prompt(turns, settings.system), tok, fake.cfg.image_token_offset))
        return original(turns, settings, on_step)

    engine.answer = answer_with_prompt_len
    return engine


class ServerProcess:
    """`llada serve --model tiny` as a real process on a free loopback port; its stderr in a file."""

    def __init__(self, tmp_path_factory, name: str, *args: str):
        import os
        import subprocess
        import sys

        self.folder = tmp_path_factory.mktemp(name)
        self.log_path = self.folder / "server.log"
        home = tmp_path_factory.getbasetemp() / "llada-home"  # the tests' own, as isolated_caches sets it
        env = os.environ | {"LLADA_HOME": str(home), "HF_HUB_CACHE": str(self.folder / "hf"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}  # fmt: skip
        env.pop("LLADA_API_KEY", None)
        cmd = [sys.executable, "-m", "llada_cli", "serve", "--model", "tiny", "--device", "cpu", *args]
        self.log = open(self.log_path, "w")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        import re
        import time

        deadline = time.time() + 120
        while time.time() < deadline:
            found = re.search(r"serving on (http://\S+)/v1", self.log_path.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"llada serve exited {self.proc.returncode}: {self.log_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError("llada serve did not start: " + self.log_path.read_text())

    def text(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig=None) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.log.close()
