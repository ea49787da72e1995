"""Editing: the official crop, guidance rows, multi-reference layout, `llada edit`, `/edit` in the REPL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from llada_cli.cli.app import run
from llada_cli.inputs.preprocess import choose_crop_size, crop_size_list, edit_crop
from llada_cli.io.images import load_image
from llada_cli.pipelines.edit import Editor, guidance_plan
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.settings import EditSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
SUNSET, SHAPES = str(EXAMPLES / "sunset.png"), str(EXAMPLES / "shapes.png")


def test_crop_size_list_for_the_512_budget():
    sizes = crop_size_list(512)
    assert len(sizes) == 49 and sizes[0] == (1024, 256) and sizes[-1] == (256, 1024) and (512, 512) in sizes
    assert all(w % 32 == 0 and h % 32 == 0 and w * h <= 512 * 512 for w, h in sizes)
    for budget in (768, 1024):
        assert all(w * h <= budget * budget and max(w, h) / min(w, h) <= 4 for w, h in crop_size_list(budget))


@pytest.mark.parametrize(
    "w, h, crop",
    [
        (1200, 900, (576, 448)),
        (1920, 1080, (672, 384)),
        (512, 512, (512, 512)),
        (300, 200, (608, 416)),
        (200, 800, (256, 1024)),
    ],
)
def test_aspect_choice(w, h, crop):
    assert choose_crop_size(w, h, crop_size_list(512)) == crop


def test_official_crop_is_a_native_window_and_fit_keeps_the_whole_picture():
    img = Image.new("RGB", (1200, 900), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 100, 900))  # a red band on the left edge
    native = edit_crop(img, 512)
    assert native.size == (576, 448) and native.getpixel((0, 200)) == (0, 0, 255)  # the band is cut away
    fitted = edit_crop(img, 512, fit=True)
    assert fitted.size == (576, 448) and fitted.getpixel((5, 200))[0] > 200  # the band survives
    small = edit_crop(Image.new("RGB", (300, 200), (255, 255, 255)), 512)
    # the official window starts at the top-left corner, so the padding falls right and below
    assert small.size == (608, 416) and small.getpixel((2, 2)) == (255, 255, 255)
    assert small.getpixel((600, 410)) == (0, 0, 0)


@pytest.mark.parametrize(
    "text, image, rows",
    [
        (4.0, 0.0, ("cond", "no_text")),
        (4.0, 1.5, ("cond", "no_text", "no_image")),
        (1.0, 0.0, ("cond",)),
        (0.0, 0.0, ("cond",)),
    ],
)
def test_guidance_plan_skips_rows_it_does_not_need(text, image, rows):
    assert guidance_plan(EditSettings(cfg_text=text, cfg_image=image))[0] == rows


class CountingModel:
    """Wraps the real tiny backbone and records how many rows each forward computes."""

    def __init__(self, real):
        self.real, self.cfg, self.lm_head, self.rows = real, real.cfg, real.lm_head, []

    def make_cache(self, batch, max_len):
        return self.real.make_cache(batch, max_len)

    def __call__(self, ids, *args, **kwargs):
        if not kwargs.get("commit"):
            self.rows.append(ids.shape[0])
        return self.real(ids, *args, **kwargs)


@pytest.fixture(scope="module")
def editor(tiny_dir):
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.inputs.tokenizer import TextTokenizer
    from llada_cli.pipelines.text2image import TextToImage
    from llada_cli.pipelines.understand import ImageEncoder

    model = CountingModel(load_backbone(tiny_dir, "cpu", torch.float32))
    gen = TextToImage(model, TextTokenizer(tiny_dir / "tokenizer.json"))
    return Editor(gen, ImageEncoder(tiny_dir, "cpu"))


def test_no_image_row_is_computed_only_when_its_scale_is_positive(editor):
    settings = EditSettings(sampler=SamplerSettings(steps=4), budget=512)
    sources = editor.sources([load_image(SHAPES)], settings)
    for scale, rows in ((0.0, 2), (1.5, 3)):
        editor.t2i.model.rows.clear()
        result = editor.edit(
            sources,
            "make it blue",
            EditSettings(sampler=SamplerSettings(steps=4), cfg_image=scale),
            seed=0,
            grid=(2, 2),
        )
        assert set(editor.t2i.model.rows) == {rows} and len(result.codes) == 4


def test_multi_reference_layout_and_output_grid(editor):
    from llada_cli.inputs.prompts import edit_prompt

    settings = EditSettings(sampler=SamplerSettings(steps=4))
    sources = editor.sources([load_image(SUNSET), load_image(SHAPES)], settings)
    assert sources[0].grid == (26, 38) and sources[1].grid == (32, 32)  # 608x416 and 512x512 crops
    tok = editor.t2i.tokenizer
    ids = editor.t2i.ids(edit_prompt([s.block for s in sources], "swap them", 26, 38))
    text = tok._tok.decode(ids, skip_special_tokens=False)
    assert text.count("<|/image|>") == 2
    assert text.index("<|reserved_token_26|><|reserved_token_38|>") < text.index("<|reserved_token_32|>")
    assert (
        "<|/image|>swap them<role>ASSISTANT</role><|image|><|reserved_token_26|><|reserved_token_38|><boi>"
        in text
    )


def edit_cli(capsys, *args):
    code = run(["edit", *args, "--model", "tiny"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_single_and_multi_reference_edits(capsys, tmp_path):
    code, [row], err = edit_cli(
        capsys,
        "--image",
        SHAPES,
        "make it blue",
        "--seed",
        "3",
        "--out-dir",
        str(tmp_path),
        "--steps",
        "2",
        "--json",
    )
    assert code == 0, err
    assert row["grid"] == [32, 32] and row["width"] == 1024 and row["instruction"] == "make it blue"
    assert row["settings"]["cfg_text"] == 4.0 and row["settings"]["cfg_image"] == 0.0
    assert Image.open(row["path"]).size == (1024, 1024)
    png_images = json.loads(Image.open(row["path"]).text["llada"])["images"]
    assert png_images[0]["sha256"] and png_images[0]["transparency"] == "drop"  # shapes.png is transparent
    assert png_images[0]["image_tokenizer_precision"] == "bf16"
    assert "shapes.png has transparent pixels: alpha dropped" in err
    code, [row], err = edit_cli(
        capsys,
        "-i",
        SUNSET,
        "-i",
        SHAPES,
        "--instruction",
        "merge",
        "--size",
        "128x64",
        "--cfg-image",
        "1.5",
        "-o",
        str(tmp_path / "multi.png"),
        "--steps",
        "2",
        "--alpha",
        "white",
        "--vq-precision",
        "fp32",
        "--json",
    )
    assert code == 0, err
    assert [i["transparency"] for i in row["images"]] == [None, "white"]
    assert {i["image_tokenizer_precision"] for i in row["images"]} == {"fp32"}
    assert len(row["images"]) == 2 and row["grid"] == [2, 4] and row["settings"]["cfg_image"] == 1.5
    assert Image.open(tmp_path / "multi.png").size == (128, 64)


def test_batch_edits_with_each_glob_and_a_file_with_resume(capsys, tmp_path):
    code, rows, _ = edit_cli(
        capsys,
        "-i",
        str(EXAMPLES / "*.png"),
        "make it old",
        "--size",
        "64x64",
        "--out-dir",
        str(tmp_path / "g"),
        "--json",
        "--steps",
        "2",
    )
    assert code == 0 and sorted(Path(r["images"][0]["source"]).name for r in rows) == [
        "shapes.png",
        "sunset.png",
    ]
    edits = tmp_path / "edits.jsonl"
    edits.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                {"image": SUNSET, "instruction": "add a boat", "seed": 1},
                {"image": [SUNSET, SHAPES], "instruction": "combine", "cfg_image": 1.0},
                {"image": str(tmp_path / "missing.png"), "instruction": "fix it"},
                {"instruction": "no image here"},
            ]
        )
        + "\n"
    )
    out_dir = tmp_path / "f"
    code, rows, err = edit_cli(
        capsys,
        "--edits-file",
        str(edits),
        "--size",
        "64x64",
        "--out-dir",
        str(out_dir),
        "--json",
        "--steps",
        "2",
    )
    assert code == 3 and len(rows) == 2
    assert "missing.png does not exist" in err and "edits.jsonl:4: no image" in err
    # lose the second result as a crash would, then resume: only that one is redone
    second = Path(rows[1]["path"])
    second.unlink()
    kept = Path(rows[0]["path"]).stat().st_mtime_ns
    code, again, _ = edit_cli(
        capsys,
        "--edits-file",
        str(edits),
        "--size",
        "64x64",
        "--out-dir",
        str(out_dir),
        "--json",
        "--steps",
        "2",
        "--resume",
    )
    assert [Path(r["path"]).name for r in again] == [second.name]
    assert Path(rows[0]["path"]).stat().st_mtime_ns == kept and second.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nope.png", "does not exist"),
        (lambda d: d, "is a folder"),
        (lambda d: (d / "t.png").write_text("text") and d / "t.png", "not an image"),
    ],
)
def test_bad_sources_fail_before_loading_anything(capsys, tmp_path, make, message):
    code, rows, err = edit_cli(capsys, "--image", str(make(tmp_path)), "do it")
    assert code == 2 and rows == [] and message in err and "Traceback" not in err


def test_edit_in_the_repl(tiny_dir, tmp_path, monkeypatch, capsys):
    from llada_cli.cli.repl import Repl
    from llada_cli.pipelines.chat import ChatSession
    from llada_cli.settings import ChatSettings

    from .conftest import engine_for

    monkeypatch.chdir(tmp_path)
    session = ChatSession(engine_for(tiny_dir), ChatSettings(max_tokens=8, seed=0))
    lines = iter(
        ["/edit make it blue", f"/image {SHAPES}", "/edit make it blue", "what changed?", "/save t.json"]
    )

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    Repl(session, read_line=read).loop()
    out, err = capsys.readouterr()
    assert "no image in this conversation yet" in err
    assert (tmp_path / "llada-edit-1.png").exists() and "llada-edit-1.png" in out
    assert "attached to your next question" in err
    first = [t for t in session.turns if t.role == "user"][0]
    assert len(first.parts) == 3  # the original and the edited image, then the question
    saved = json.loads((tmp_path / "t.json").read_text())["turns"]
    assert [t["role"] for t in saved] == ["edit", "user", "assistant"]
    assert saved[0]["instruction"] == "make it blue" and saved[0]["output"] == "llada-edit-1.png"
    assert [Path(i["source"]).name for i in saved[1]["images"]] == ["shapes.png", "llada-edit-1.png"]


def test_images_can_come_before_the_instruction(capsys, tmp_path):
    code, [row], err = edit_cli(
        capsys,
        SHAPES,
        SUNSET,
        "merge them",
        "--size",
        "64x64",
        "--steps",
        "2",
        "-o",
        str(tmp_path / "p.png"),
        "--json",
    )
    assert code == 0, err
    assert [Path(i["source"]).name for i in row["images"]] == ["shapes.png", "sunset.png"]
    assert row["instruction"] == "merge them"
    code, rows, err = edit_cli(capsys, SHAPES)
    assert code == 2 and "is an image; what should change?" in err
