"""Images in `llada chat` on the tiny checkpoint: CLI, stdin, two images, the code cache, the REPL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llada_cli.cli.app import run
from llada_cli.inputs.prompts import ImageBlock
from llada_cli.io.images import load_image
from llada_cli.pipelines.chat import ChatSession
from llada_cli.settings import ChatSettings

from .conftest import engine_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
SUNSET, SHAPES = str(EXAMPLES / "sunset.png"), str(EXAMPLES / "shapes.png")


@pytest.fixture(scope="module")
def pipeline(tiny_dir):
    return engine_for(tiny_dir)


def test_cli_answers_about_an_image_and_reports_its_grid(capsys):
    code = run(
        [
            "chat",
            "--image",
            SUNSET,
            "What is in this picture?",
            "--model",
            "tiny",
            "--max-tokens",
            "32",
            "--seed",
            "1",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    [image] = record["images"]
    assert image["original_size"] == [480, 320] and image["size"] == [480, 320]
    assert image["grid"] == [20, 30] and image["tokens"] == 600
    assert image["image_tokenizer_precision"] == "bf16" and image["transparency"] is None
    assert record["tokens"]["image"] == 600 and record["tokens"]["prompt"] > 600
    assert record["memory"]["peak_rss_bytes"] > 0
    assert "grid 20x30 = 600 tokens" in err


def test_two_images_share_one_turn_with_the_smaller_budget(pipeline):
    session = ChatSession(pipeline, ChatSettings(max_tokens=16, seed=0))
    big = load_image(SUNSET)
    turn, encoded = session.user_turn("compare them", [big, load_image(SHAPES)])
    assert [type(p) for p in turn.parts] == [ImageBlock, ImageBlock, str]
    assert encoded[1].size == (288, 288)  # 300x300 within the several-images budget
    from llada_cli.inputs.prompts import chat_prompt, encode

    offset = pipeline.config.image_token_offset
    ids = encode(chat_prompt([turn], session.settings.system), pipeline.tokenizer, offset)
    text = pipeline.tokenizer._tok.decode(ids, skip_special_tokens=False)
    assert text.count("<|image|>") == 2 and text.count("<|/image|>") == 2
    assert "<|/image|>compare them<role>ASSISTANT</role>" in text
    assert text.index("<|reserved_token_20|><|reserved_token_30|><boi>") < text.index("<|reserved_token_18|>")


def test_codes_are_cached_by_content_and_low_memory_releases_the_encoder(tiny_dir):
    pipeline = engine_for(tiny_dir, low_memory=True)
    session = ChatSession(pipeline, ChatSettings(max_tokens=8, seed=0))
    session.ask("first question", [load_image(SUNSET)])
    assert pipeline.encoder.model is None  # released after encoding
    session.ask("second question", [load_image(SUNSET)])
    assert pipeline.encoder.encoder_runs == 1
    session.ask("a third", [load_image(SUNSET), load_image(SHAPES)])  # several images: another budget
    assert pipeline.encoder.encoder_runs == 2


def test_the_image_tokenizer_runs_in_bf16_beside_an_fp32_backbone(tiny_dir):
    # official rule: ImageTokenizer(dtype=torch.bfloat16) in every script: the tower, quant_conv and the
    # code search all compute in bf16, whatever the backbone's dtype and the device
    pipe = engine_for(tiny_dir)
    seen = set()

    def spy(module, args, output):
        seen.add((type(module).__name__, args[0].dtype, output.dtype))

    pipe.encoder.encode([load_image(SUNSET)])  # loads the tokenizer
    model = pipe.encoder.model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    hooks = [
        m.register_forward_hook(spy)
        for m in model.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))
    ]
    pipe.encoder.cache.clear()
    [encoded] = pipe.encoder.encode([load_image(SUNSET)])
    for h in hooks:
        h.remove()
    assert {(i, o) for _, i, o in seen} == {(torch.bfloat16, torch.bfloat16)}
    assert {name for name, _, _ in seen} == {"Linear", "LayerNorm"}
    assert encoded.record()["image_tokenizer_precision"] == "bf16"
    assert pipe.model.lm_head.weight.dtype == torch.float32  # the backbone keeps its own dtype


def test_fp32_image_tokenizer_is_an_option_and_says_so(tiny_dir):
    a = engine_for(tiny_dir, image_precision="fp32")
    [encoded] = a.encode([load_image(SHAPES)])
    assert {p.dtype for p in a.encoder.model.parameters()} == {torch.float32}
    assert len(encoded.codes) == encoded.grid[0] * encoded.grid[1]
    assert encoded.record()["image_tokenizer_precision"] == "fp32"


def test_transparency_is_reported_once_and_recorded(tiny_dir, caplog):
    pipe = engine_for(tiny_dir)
    with caplog.at_level("WARNING", logger="llada.image"):
        [shapes] = pipe.encode([load_image(SHAPES)])
        pipe.encode([load_image(SHAPES)])  # cached: no second note
        [sunset] = pipe.encode([load_image(SUNSET)])
    notes = [r.getMessage() for r in caplog.records if r.name == "llada.image"]
    assert len(notes) == 1 and "shapes.png has transparent pixels: alpha dropped" in notes[0]
    assert shapes.record()["transparency"] == "drop" and sunset.record()["transparency"] is None
    white = engine_for(tiny_dir, alpha="white")
    [composited] = white.encode([load_image(SHAPES)])
    assert composited.record()["transparency"] == "white"


def test_image_from_stdin():
    data = Path(SHAPES).read_bytes()
    cmd = [
        sys.executable,
        "-m",
        "llada_cli",
        "chat",
        "--image",
        "-",
        "what shapes?",
        "--model",
        "tiny",
        "--max-tokens",
        "16",
        "--json",
    ]
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"][0]["source"] == "-"
    proc = subprocess.run(cmd[:6] + cmd[7:], input=data, capture_output=True, timeout=120)
    assert proc.returncode == 2 and b"question must be an argument" in proc.stderr


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (Path(SUNSET).read_bytes()[:60], "truncated"), (b"plain text", "not an image")],
)
def test_bad_image_exits_2_before_loading_anything(capsys, tmp_path, content, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    code = run(["chat", "--image", str(bad), "hi", "--model", "tiny"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_repl_image_command_and_typed_paths(pipeline, capsys):
    from llada_cli.cli.repl import Repl

    session = ChatSession(pipeline, ChatSettings(max_tokens=8, seed=0))
    lines = iter([f"/image {SHAPES}", "what is this?", f"and {SUNSET} here?", "/image nope.png", SUNSET])

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    repl = Repl(session, read_line=read)
    repl.loop()
    err = capsys.readouterr().err
    user_turns = [t for t in session.turns if t.role == "user"]
    assert len(user_turns) == 2
    assert isinstance(user_turns[0].parts[0], ImageBlock) and user_turns[0].parts[-1] == "what is this?"
    assert isinstance(user_turns[1].parts[0], ImageBlock) and user_turns[1].parts[-1] == "and here?"
    assert f"attached {SHAPES}" in err and f"attached {SUNSET}" in err
    assert "does not exist" in err and "now ask a question" in err
    assert len(repl.staged) == 1  # the last path alone waits for a question
