"""Interleaved generation driven by a scripted model: frames, grids, guidance rows, documents, events."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from llada_cli.checkpoint.components import load_backbone
from llada_cli.inputs.prompts import encode, interleave_prompt
from llada_cli.inputs.tokenizer import TextTokenizer
from llada_cli.io.documents import DocumentWriter
from llada_cli.pipelines import runner as runner_module
from llada_cli.pipelines.decode import DecoderStack
from llada_cli.pipelines.interleave import Interleaver
from llada_cli.pipelines.text2image import TextToImage
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.settings import InterleaveSettings

from .conftest import ScriptedBackbone


@pytest.fixture(scope="module")
def parts(tiny_dir):
    model = load_backbone(tiny_dir, "cpu", torch.float32)
    tok = TextTokenizer(tiny_dir / "tokenizer.json")
    return model, tok, DecoderStack.load(tiny_dir, "turbo", "cpu", torch.float32)


PROMPT = "Write about tea"


class Frames:
    """Decodes each image segment before the writer gets it, as the CLI does."""

    def __init__(self, writer, decoder):
        self.writer, self.decoder = writer, decoder

    def add(self, segment):
        if segment.kind != "image":
            return self.writer.add(segment)
        picture, timings = self.decoder.decode(segment.codes, *segment.grid, segment.seed)
        return self.writer.add(segment, picture, {"frame": segment.frame}, timings.decoder)


def build(parts, pieces, settings=None, cfg_changes=None):
    """An Interleaver whose model follows `pieces`: strings (text), ("img", h, w, codes), ("raw", [ids])."""
    model, tok, _ = parts
    offset = model.cfg.image_token_offset
    script: list[int] = []
    for piece in pieces:
        if isinstance(piece, str):
            script += tok.encode(piece)
        elif piece[0] == "img":
            _, h, w, codes = piece
            script += [
                tok.ids["image_start"],
                tok.token_id(f"<|reserved_token_{h}|>"),
                tok.token_id(f"<|reserved_token_{w}|>"),
                tok.ids["boi"],
            ]
            script += [offset + c for c in codes] + [tok.ids["image_end"]]
        else:
            script += piece[1]
    settings = settings or InterleaveSettings(
        text_sampler=SamplerSettings(steps=4), image_sampler=SamplerSettings(steps=4), max_new_tokens=128
    )
    prompt_len = len(encode(interleave_prompt(PROMPT, settings.system), tok, offset))
    cfg = dataclasses.replace(model.cfg, **(cfg_changes or {}))
    fake = ScriptedBackbone(model, script, tok.ids["eos"], prompt_len, cfg)
    return Interleaver(TextToImage(fake, tok)), settings


def test_frames_grids_and_the_document(parts, tmp_path, monkeypatch, capsys):
    from llada_cli.cli.interleave import _Renderer

    rows_checked = []
    original = runner_module.BackboneRunner.logits

    def spy(self, tokens, start):
        out = original(self, tokens, start)
        if self.canvas.shape[0] > 1:  # every guidance row holds the same generated codes
            gen = self.canvas[:, self.prompt_len :]
            assert all(torch.equal(gen[r], gen[0]) for r in range(gen.shape[0]))
            rows_checked.append(self.canvas.shape[0])
        return out

    monkeypatch.setattr(runner_module.BackboneRunner, "logits", spy)
    inter, settings = build(
        parts,
        [
            "First boil water. ",
            ("img", 2, 3, [1, 2, 3, 4, 5, 6]),
            "Then pour. ",
            ("img", 1, 2, [7, 8]),
            "Enjoy.",
        ],
    )
    writer = Frames(DocumentWriter(tmp_path, prompt=PROMPT, model="tiny", settings={}, seed=5), parts[2])
    view = _Renderer(True, tmp_path, parts[1])
    doc = inter.run(PROMPT, settings, 5, on_segment=lambda s, _: view.segment(writer.add(s)))
    view.done(doc, tmp_path, [])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["text", "image", "text", "image", "text", "done"]
    assert events[1]["grid"] == [2, 3] and events[3]["grid"] == [1, 2]
    assert events[1]["width"] == 96 and events[1]["height"] == 64 and events[1]["guidance"] == "simple"
    assert events[3]["guidance"] == "editing"  # later frames: history-aware no-text and no-image rows
    assert doc.finish_reason == "stop" and doc.frames == 2
    assert [s.codes for s in doc.segments if s.kind == "image"] == [[1, 2, 3, 4, 5, 6], [7, 8]]
    assert set(rows_checked) == {2, 3}
    md = (tmp_path / "document.md").read_text()
    assert (
        md
        == "First boil water. \n\n![frame 1](frame-1.png)\n\nThen pour. \n\n![frame 2](frame-2.png)\n\nEnjoy.\n"
    )
    saved = json.loads((tmp_path / "document.json").read_text())
    assert [s["kind"] for s in saved["segments"]] == ["text", "image", "text", "image", "text"]
    assert (tmp_path / "frame-2.png").exists() and (tmp_path / "frame-1.codes.json").exists()


def test_max_frames_stops_the_document(parts):
    pieces = ["a ", ("img", 1, 1, [1]), "b ", ("img", 1, 1, [2]), "c ", ("img", 1, 1, [3]), "d"]
    settings = InterleaveSettings(
        text_sampler=SamplerSettings(steps=4),
        image_sampler=SamplerSettings(steps=4),
        max_new_tokens=64,
        max_frames=2,
    )
    inter, _ = build(parts, pieces, settings)
    doc = inter.run(PROMPT, settings, 0)
    assert doc.frames == 2 and doc.finish_reason == "max_frames"


@pytest.mark.parametrize(
    "header, message",
    [
        (
            lambda tok: [
                tok.ids["image_start"],
                tok.encode("x")[0],
                tok.token_id("<|reserved_token_2|>"),
                tok.ids["boi"],
            ],
            "not <|reserved_token_N|>",
        ),
        (
            lambda tok: [
                tok.ids["image_start"],
                tok.token_id("<|reserved_token_0|>"),
                tok.token_id("<|reserved_token_2|>"),
                tok.ids["boi"],
            ],
            "is empty",
        ),
        (
            lambda tok: [
                tok.ids["image_start"],
                tok.token_id("<|reserved_token_90|>"),
                tok.token_id("<|reserved_token_90|>"),
                tok.ids["boi"],
            ],
            "max-image-tokens",
        ),
    ],
)
def test_malformed_headers_end_the_document_with_a_message(parts, header, message):
    tok = parts[1]
    inter, settings = build(parts, ["Look: ", ("raw", header(tok))])
    doc = inter.run(PROMPT, settings, 0)
    assert doc.finish_reason == "malformed_header"
    assert doc.segments[-1].kind == "error" and message in doc.segments[-1].text
    assert doc.segments[0].text == "Look: "


def test_an_image_that_does_not_fit_the_context(parts):
    inter, settings = build(
        parts, ["Hi ", ("img", 8, 8, list(range(64)))], cfg_changes={"max_position_embeddings": 100}
    )
    doc = inter.run(PROMPT, settings, 0)
    assert doc.finish_reason == "malformed_header" and "does not fit" in doc.segments[-1].text


def test_text_never_contains_image_codes_and_the_real_model_runs(parts, tmp_path):
    model, tok, dec = parts
    settings = InterleaveSettings(
        text_sampler=SamplerSettings(steps=4), image_sampler=SamplerSettings(steps=4), max_new_tokens=32
    )
    doc = Interleaver(TextToImage(model, tok)).run(PROMPT, settings, 1)
    assert doc.finish_reason in ("stop", "length", "max_frames", "malformed_header", "context")
    assert doc.tokens > 0


def test_cli_on_tiny_writes_a_document_and_refuses_to_overwrite_it(capsys, tmp_path):
    from llada_cli.cli.app import run

    args = [
        "interleave",
        "A guide to tea",
        "--model",
        "tiny",
        "--max-new-tokens",
        "32",
        "--steps",
        "4",
        "--out-dir",
        str(tmp_path / "doc"),
        "--seed",
        "3",
        "--json",
    ]
    assert run(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["document"] == str(tmp_path / "doc" / "document.md")
    assert json.loads((tmp_path / "doc" / "document.json").read_text())["seed"] == 3
    assert run(args) == 2 and "already holds a document" in capsys.readouterr().err


@pytest.mark.parametrize("json_out", [False, True])
def test_text_is_streamed_block_by_block_without_a_terminal(parts, tmp_path, capsys, json_out, monkeypatch):
    from llada_cli.cli import interleave as interleave_cli
    from llada_cli.cli.interleave import _Renderer

    pieces = []  # what the block streamer wrote to stdout, one entry per write
    real_write = interleave_cli.write_stdout
    monkeypatch.setattr(interleave_cli, "write_stdout", lambda text: (pieces.append(text), real_write(text)))

    long_text = " ".join(f"word{i}" for i in range(60)) + "."
    settings = InterleaveSettings(
        text_sampler=SamplerSettings(steps=4), image_sampler=SamplerSettings(steps=4), max_new_tokens=512
    )
    inter, settings = build(parts, [long_text, ("img", 1, 2, [7, 8]), "The end."], settings)
    writer = Frames(DocumentWriter(tmp_path, prompt=PROMPT, model="tiny", settings={}, seed=5), parts[2])
    view = _Renderer(json_out, tmp_path, parts[1])
    written = []
    real = view.out.__class__.data

    def spy(self, text):
        written.append(text)
        real(self, text)

    view.out.__class__.data = spy
    try:
        inter.run(PROMPT, settings, 5, on_segment=lambda s, _: view.segment(writer.add(s)), on_step=view.step)
    finally:
        view.out.__class__.data = real
    out = capsys.readouterr().out
    if json_out:
        events = [json.loads(line) for line in out.splitlines()]
        deltas = [e["text"] for e in events[: [e["event"] for e in events].index("text")]]
        assert len(deltas) >= 2 and all(e["event"] == "text_delta" for e in events[: len(deltas)])
        assert long_text.startswith("".join(deltas).strip())  # decided text, before the phase ends
    else:
        assert out.startswith(long_text) and out.count("word59") == 1  # streamed, then never repeated
        assert len(written) < out.count("\n") + 5  # the first text went out in pieces, not in one piece
        streamed = [p for p in pieces if "word" in p]  # the first text run, block by block
        assert len(streamed) >= 2 and long_text.startswith("".join(streamed).strip())


def test_the_default_text_run_is_one_a_user_can_wait_for():
    import inspect

    from llada_cli.cli.interleave import interleave

    assert InterleaveSettings().max_new_tokens == 1024
    assert inspect.signature(interleave).parameters["max_new_tokens"].default == 1024


def test_a_folder_another_run_is_writing_is_refused_and_a_failed_run_leaves_no_folder(tiny_dir, tmp_path, capsys):
    from llada_cli.cli.app import run

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".document.md.llada-reserved").touch()  # another run holds this document
    args = ["interleave", "tea", "--model", str(tiny_dir), "--device", "cpu", "--steps", "2", "--max-new-tokens", "8"]
    assert run([*args, "--out-dir", str(busy)]) == 2
    assert "another run is writing a document" in capsys.readouterr().err
    assert not (busy / "document.md").exists()
    fresh = tmp_path / "fresh"
    assert run([*args, "--out-dir", str(fresh), "--image", str(tmp_path / "missing.png")]) == 2
    assert not fresh.exists()  # refused before writing: no empty folder
