"""The bad-input matrix: every case one clear line naming the flag or field, the documented exit code,
nothing on stdout, no traceback, no model loaded. Cases are grouped by class; the count is pinned so a
lost case is noticed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from llada_cli.cli.app import run

SMALL = ["--model", "tiny", "--size", "64x64"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
SUNSET = str(EXAMPLES / "sunset.png")


def _files(tmp: Path) -> dict[str, str]:
    """The bad files the cases refer to, made once per test in its own folder."""
    os.mkfifo(tmp / "fifo")
    os.mkfifo(tmp / "fifo.png")  # a device-like node where an output would go
    (tmp / "folder").mkdir()
    (tmp / "binary.jsonl").write_bytes(b"\xff\xfe\x00bad")
    (tmp / "exists.png").write_bytes(b"precious")
    (tmp / "not-a-dir").write_text("x")
    codes = {
        "list.codes.json": [1, 2, 3],
        "range.codes.json": {"grid": [1, 2], "codes": [0, 99999999]},
        "float.codes.json": {"grid": [1, 2], "codes": [0, 1.5]},
        "grid.codes.json": {"grid": [0, 2], "codes": []},
        "count.codes.json": {"grid": [2, 2], "codes": [1, 2, 3]},
        "seed.codes.json": {"grid": [1, 1], "codes": [3], "seed": -4},
    }
    for name, body in codes.items():
        (tmp / name).write_text(json.dumps(body))
    (tmp / "notjson.codes.json").write_text("{grid")
    record = {"prompt": "x", "seed": 1, "settings": {"steps": "eight"}}
    img = Image.new("RGB", (8, 8))
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("llada", json.dumps(record))
    img.save(tmp / "bad-record.png", pnginfo=info)
    (tmp / "text.png").write_text("not a picture")
    return {
        k: str(tmp / k) for k in ("fifo", "fifo.png", "folder", "binary.jsonl", "exists.png", "not-a-dir")
    } | {k: str(tmp / k) for k in [*codes, "notjson.codes.json", "bad-record.png", "text.png"]}


# (class, args, exit code, text the one error line must hold); "{name}" refers to _files
CASES = [
    # prompts
    ("prompt", ["generate", "", *SMALL], 2, "a prompt is empty"),
    ("prompt", ["generate", "   ", *SMALL], 2, "a prompt is empty"),
    ("prompt", ["chat", "   ", "--model", "tiny"], 2, "the prompt is empty"),
    ("prompt", ["interleave", "  ", "--model", "tiny"], 2, "no prompt given"),
    # one rule per flag: the flag and the bad value named
    ("value", ["generate", "x", "--cfg", "nan", *SMALL], 2, "--cfg nan must be a number in [0, 100]"),
    ("value", ["generate", "x", "--cfg", "inf", *SMALL], 2, "--cfg inf must be"),
    ("value", ["edit", "x", "-i", SUNSET, "--cfg-image", "inf", "--model", "tiny"], 2, "--cfg-image inf"),
    ("value", ["edit", "x", "-i", SUNSET, "--cfg-image", "-1", "--model", "tiny"], 2, "--cfg-image -1.0"),
    ("value", ["generate", "x", "--steps", "-1", *SMALL], 2, "--steps -1 must be an integer in [1, 1024]"),
    ("value", ["generate", "x", "--block-length", "100000", *SMALL], 2, "--block-length 100000"),
    ("value", ["chat", "x", "--threshold", "nan", "--model", "tiny"], 2, "--threshold nan"),
    ("value", ["chat", "x", "--top-p", "0", "--model", "tiny"], 2, "--top-p 0.0 must be a number in (0, 1]"),
    ("value", ["chat", "x", "--temperature", "-1", "--model", "tiny"], 2, "--temperature -1.0"),
    ("value", ["chat", "x", "--max-tokens", "0", "--model", "tiny"], 2, "--max-tokens 0"),
    ("value", ["chat", "x", "--top-k", "-3", "--model", "tiny"], 2, "--top-k -3"),
    ("value", ["generate", "x", "--seed", str(2**70), *SMALL], 2, f"--seed {2**70} must be an integer"),
    ("value", ["generate", "x", "--seed", "-1", *SMALL], 2, "--seed -1 must be"),
    ("value", ["generate", "x", "-n", "0", *SMALL], 2, "--num-images 0"),
    ("value", ["generate", "x", "--decoder-steps", "1", *SMALL], 2, "--decoder-steps 1"),
    ("value", ["generate", "x", "--resolution-multiplier", "9", *SMALL], 2, "--resolution-multiplier 9"),
    ("value", ["generate", "x", "--thinking-length", "0", *SMALL], 2, "--thinking-length 0"),
    ("value", ["generate", "x", "--sprint", "--keep-ratio", "0", *SMALL], 2, "--keep-ratio 0.0"),
    ("value", ["interleave", "x", "--max-frames", "0", "--model", "tiny"], 2, "--max-frames 0"),
    ("value", ["interleave", "x", "--max-image-tokens", "99999", "--model", "tiny"], 2, "--max-image-tokens"),
    ("value", ["edit", "x", "-i", SUNSET, "--budget", "640", "--model", "tiny"], 2, "--budget 640"),
    # sizes: checked before work, the same on every command and in --dry-run
    ("size", ["generate", "x", "--model", "tiny", "--size", "0x64"], 2, "not a positive multiple of 32"),
    ("size", ["generate", "x", "--model", "tiny", "--width", "-5"], 2, "--width -5 must be"),
    ("size", ["generate", "x", "--model", "tiny", "--size", "99968x99968"], 2, "over 4096 pixels"),
    ("size", ["generate", "x", "--model", "tiny", "--aspect", "1000:1"], 2, "--aspect 1000:1 gives"),
    ("size", ["generate", "x", "--model", "tiny", "--size", "4096x4096"], 2, "more than 4096"),
    (
        "size",
        ["generate", "x", "--model", "tiny", "--size", "64x64", "--dry-run", "--width", "9"],
        2,
        "choose one",
    ),
    ("size", ["edit", "x", "-i", SUNSET, "--size", "100x64", "--model", "tiny"], 2, "width 100"),
    ("size", ["doctor", "--plan", "--size", "0"], 2, "not a positive multiple"),
    # memory options
    ("memory", ["generate", "x", *SMALL, "--max-vram", "-1", "--dry-run"], 2, "--max-vram -1.0"),
    ("memory", ["generate", "x", *SMALL, "--max-vram", "0"], 2, "--max-vram 0.0"),
    ("memory", ["chat", "x", "--model", "tiny", "--max-vram", "nan"], 2, "--max-vram nan"),
    ("memory", ["doctor", "--plan", "--assume-gpus", "-24"], 2, "--assume-gpus '-24'"),
    ("memory", ["doctor", "--plan", "--assume-gpus", "a,b"], 2, "is not a list of GB"),
    ("memory", ["doctor", "--plan", "--max-vram", "nan"], 2, "--max-vram nan"),
    # models
    ("model", ["generate", "x", "--model", ""], 2, "--model is empty"),
    ("model", ["chat", "x", "--model", "   "], 2, "--model is empty"),
    ("model", ["download", "inclusionAI/LLaDA2.0-Uni@bad rev"], 2, "not a valid branch"),
    ("model", ["chat", "x", "--model", "~nosuchuser0/x"], 2, "cannot expand the home folder"),
    # output names and targets
    ("output", ["generate", "x", *SMALL, "--name", ""], 2, "does not name a file"),
    ("output", ["generate", "x", *SMALL, "--name", "{nope}.png"], 2, "--name '{nope}.png': 'nope'"),
    ("output", ["generate", "x", *SMALL, "--name", "../x.png"], 2, "would leave the output folder"),
    ("output", ["generate", "x", *SMALL, "--name", "sub/"], 2, "does not name a file"),
    ("output", ["generate", "x", *SMALL, "--name", ".."], 2, "does not name a file"),
    ("output", ["generate", "x", *SMALL, "--name", "{index}.gif"], 2, "writes .png, .jpg/.jpeg or .webp"),
    ("output", ["generate", "x", *SMALL, "--name", "a\nb.png"], 2, "control characters"),
    ("output", ["generate", "x", *SMALL, "-o", "out.gif"], 2, "--output out.gif"),
    ("output", ["generate", "x", *SMALL, "-o", "{exists.png}"], 2, "exists"),
    ("output", ["generate", "x", *SMALL, "-o", "{fifo.png}", "--force"], 2, "not a regular file"),
    ("output", ["generate", "x", *SMALL, "-o", "{folder}", "--force"], 2, "writes .png"),
    ("output", ["generate", "x", *SMALL, "--out-dir", "{not-a-dir}"], 2, "cannot write to"),
    ("output", ["generate", "x", "y", *SMALL, "-o", "one.png"], 2, "--output names one image"),
    # input files: never read forever, never a traceback
    ("input", ["chat", "x", "--model", "tiny", "--image", "{fifo}"], 2, "not a regular file"),
    ("input", ["chat", "x", "--model", "tiny", "--image", "/dev/zero"], 2, "not a regular file"),
    ("input", ["chat", "x", "--model", "tiny", "--image", "{folder}"], 2, "is a folder"),
    ("input", ["chat", "x", "--model", "tiny", "--image", "{text.png}"], 2, "not an image llada can read"),
    ("input", ["edit", "x", "-i", "{fifo}", "--model", "tiny"], 2, "not a regular file"),
    ("input", ["generate", "--prompts-file", "{fifo}", *SMALL], 2, "not a regular file"),
    ("input", ["generate", "--prompts-file", "{folder}", *SMALL], 2, "is a folder"),
    ("input", ["edit", "--edits-file", "{binary.jsonl}", "--model", "tiny"], 2, "is not UTF-8 text"),
    ("input", ["edit", "--edits-file", "{fifo}", "--model", "tiny"], 2, "not a regular file"),
    # codes files: "not a llada codes file", before any model loads
    ("codes", ["decode", "{list.codes.json}", "--model", "tiny"], 2, "holds a JSON list, not an object"),
    ("codes", ["decode", "{range.codes.json}", "--model", "tiny"], 2, "code 99999999 is not an integer"),
    ("codes", ["decode", "{float.codes.json}", "--model", "tiny"], 2, "code 1.5 is not an integer"),
    ("codes", ["decode", "{grid.codes.json}", "--model", "tiny"], 2, "grid is [0, 2]"),
    ("codes", ["decode", "{count.codes.json}", "--model", "tiny"], 2, "a list of 4 integers, got 3"),
    ("codes", ["decode", "{seed.codes.json}", "--model", "tiny"], 2, "seed -4"),
    ("codes", ["decode", "{notjson.codes.json}", "--model", "tiny"], 2, "is not JSON"),
    ("codes", ["decode", "{folder}", "--model", "tiny"], 2, "is a folder"),
    ("codes", ["decode", "{fifo}", "--model", "tiny"], 2, "not a regular file"),
    # --params-from records
    ("record", ["generate", "--params-from", "{bad-record.png}", *SMALL], 2, "settings.steps is 'eight'"),
    ("record", ["generate", "--params-from", "{text.png}", *SMALL], 2, "cannot read it as an image"),
    ("record", ["generate", "--params-from", "{fifo}", *SMALL], 2, "not a regular file"),
]


def test_the_matrix_is_whole():
    assert len(CASES) == 77
    assert {c for c, *_ in CASES} == {
        "prompt",
        "value",
        "size",
        "memory",
        "model",
        "output",
        "input",
        "codes",
        "record",
    }


@pytest.mark.parametrize("kind, args, code, message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(capsys, tmp_path, monkeypatch, kind, args, code, message):
    monkeypatch.chdir(tmp_path)
    files = _files(tmp_path)
    args = [files.get(a[1:-1], a) if a.startswith("{") and a.endswith("}") else a for a in args]
    got = run(args)
    out, err = capsys.readouterr()
    assert (got, out) == (code, ""), err
    assert message in err and "Traceback" not in err and "internal error" not in err
    assert err.count("error:") == 1
    assert Path(tmp_path / "exists.png").read_bytes() == b"precious"
    assert not list(tmp_path.glob("*.png*.part")) and not (tmp_path / "manifest.jsonl").exists()
