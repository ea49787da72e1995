"""`llada chat` end to end: the pipeline with a scripted model, the CLI on the tiny checkpoint, the REPL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from llada_cli.cli.app import run
from llada_cli.errors import UsageError
from llada_cli.pipelines.chat import ChatSession
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.settings import ChatSettings

from .conftest import engine_for, script_engine


@pytest.fixture
def scripted(tiny_dir):
    def make(answer: str):
        return script_engine(engine_for(tiny_dir), answer)

    return make


def chat_settings(**kw):
    sampler = {k: kw.pop(k) for k in list(kw) if k in ("steps", "temperature", "top_p", "block_length")}
    return ChatSettings(sampler=SamplerSettings(**sampler), **kw)


def test_pipeline_stops_at_end_of_text_and_decodes(scripted):
    session = ChatSession(scripted("Hello there, friend."), chat_settings(max_tokens=200, seed=0))
    result = session.ask("hi")
    assert result.answer == "Hello there, friend."
    assert result.generated_tokens == len(session.engine.tokenizer.encode("Hello there, friend."))
    assert result.stats.forward_passes <= 3  # all confident: one pass for the block, plus commits
    assert [t.role for t in session.turns] == ["user", "assistant"]
    record = result.record()
    assert record["seed"] == 0 and record["tokens"]["generated"] == result.generated_tokens


def test_multi_turn_prompt_layout(scripted):
    from llada_cli.inputs.prompts import chat_prompt, encode

    engine = scripted("ok")
    session = ChatSession(engine, chat_settings(max_tokens=32, seed=0))
    session.ask("first")
    ids = encode(
        chat_prompt(session.turns, session.settings.system),
        engine.tokenizer,
        engine.config.image_token_offset,
    )
    text = engine.tokenizer._tok.decode(ids, skip_special_tokens=False)
    assert text == (
        "<role>SYSTEM</role> You are a multimodal understanding assistant. "
        "<role>HUMAN</role>first<role>ASSISTANT</role>ok<role>ASSISTANT</role>"
    )


def test_prompt_longer_than_the_context_is_a_clear_error(scripted):
    engine = scripted("x")
    fake = engine.model
    fake.cfg = type(fake.cfg)(**{**fake.cfg.__dict__, "max_position_embeddings": 50})
    with pytest.raises(UsageError, match="context holds 50"):
        ChatSession(engine).ask("a long question " * 20)


def test_cli_one_shot_json_on_tiny_is_reproducible(capsys):
    args = ["chat", "hello", "--model", "tiny", "--max-tokens", "40", "--seed", "5", "--json"]
    assert run(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert run(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first == {**second, "sampler": first["sampler"], "memory": first["memory"]}  # timings differ
    assert first["seed"] == 5 and first["settings"]["steps"] == 32
    assert 0 < first["tokens"]["generated"] <= 40 and first["sampler"]["forward_passes"] > 0


def test_cli_reads_the_prompt_from_a_pipe_and_streams_to_stdout():
    env = {**os.environ}
    proc = subprocess.run(
        [sys.executable, "-m", "llada_cli", "chat", "--model", "tiny", "--max-tokens", "40"],
        input="what is in the box?\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("stdin, code, message", [("   \n", 2, "no prompt")])
def test_cli_empty_stdin(stdin, code, message):
    proc = subprocess.run(
        [sys.executable, "-m", "llada_cli", "chat", "--model", "tiny"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code and message in proc.stderr


def test_repl_commands(scripted, tmp_path, capsys):
    from llada_cli.cli.repl import Repl

    session = ChatSession(scripted("Sure."), chat_settings(max_tokens=32, seed=0))
    transcript = tmp_path / "t.json"
    lines = iter(
        [
            "hello",
            "/set steps 4",
            "/set steps zero",
            "/set bogus 1",
            "/show",
            '"""',
            "line one",
            "line two",
            '"""',
            "continued \\",
            "here",
            f"/save {transcript}",
            f"/save {transcript}",
            "/clear",
            "/help",
            "/nonsense",
        ]
    )

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    Repl(session, read_line=read).loop()
    out, err = capsys.readouterr()
    assert out.count("Sure.") == 3
    assert session.settings.sampler.steps == 4 and session.turns == []
    saved = json.loads(transcript.read_text())
    assert [t["content"] for t in saved["turns"] if t["role"] == "user"] == [
        "hello",
        "line one\nline two",
        "continued \nhere",
    ]
    assert saved["settings"]["steps"] == 4
    assert "/set steps 'zero': not an integer" in err and "usage: /set" in err and "exists" in err
    assert "unknown command /nonsense" in err and "/save [--force] FILE" in err


def test_repl_in_a_pseudo_terminal(tmp_path):
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child: the real CLI on a terminal
        os.environ["LLADA_HOME"] = os.environ.get("LLADA_HOME", str(tmp_path))
        os.execv(
            sys.executable,
            [sys.executable, "-m", "llada_cli", "chat", "--model", "tiny", "--max-tokens", "32"],
        )
    seen = b""

    def read_until(marker: bytes, count: int, timeout: float = 120) -> None:
        nonlocal seen
        end = time.time() + timeout
        while seen.count(marker) < count and time.time() < end:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    return

    read_until(b">>> ", 1)
    os.write(fd, b"hello\n")
    read_until(b">>> ", 2)
    seen_after_answer = seen.count(b">>> ")
    os.write(fd, b"/exit\n")
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert seen_after_answer >= 2 and b"/help" in seen


def test_the_repl_survives_bad_values_errors_and_ctrl_c(scripted, capsys, monkeypatch):
    from llada_cli.cli.repl import Repl
    from llada_cli.errors import Interrupted

    session = ChatSession(scripted("Sure."), chat_settings(max_tokens=32, seed=0))
    real_reply, calls = session.engine.answer, []

    def flaky(*args, **kwargs):  # the first turn meets a bug, the second is cancelled by Ctrl-C
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 2:
            raise Interrupted("interrupted by SIGINT")
        return real_reply(*args, **kwargs)

    monkeypatch.setattr(session.engine, "answer", flaky)
    script = ["/set temperature nan", "/set top_p 0", "first", "second", None, "third"]

    def read(prompt):
        if not script:
            raise EOFError
        line = script.pop(0)
        if line is None:  # Ctrl-C while typing
            raise Interrupted("interrupted by SIGINT")
        return line

    Repl(session, read_line=read).loop()
    out, err = capsys.readouterr()
    assert "/set temperature: --temperature nan must be" in err and "/set top_p: --top-p 0.0" in err
    assert session.settings.sampler.temperature == 0.0 and session.settings.sampler.top_p == 1.0
    assert "internal error: RuntimeError: boom" in err and err.count("cancelled") == 2
    assert out.count("Sure.") == 1 and [t.role for t in session.turns] == ["user", "assistant"]
    assert session.turns[0].parts == ["third"]  # the failed and cancelled turns left no trace


def test_sigterm_in_the_repl_leaves(scripted):
    from llada_cli.cli.repl import Repl
    from llada_cli.errors import Interrupted

    def read(prompt):
        raise Interrupted("interrupted by SIGTERM", signal="SIGTERM")

    with pytest.raises(Interrupted):
        Repl(ChatSession(scripted("x"), chat_settings()), read_line=read).loop()
