"""`llada generate` and `llada decode` end to end on the tiny checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from llada_cli.cli.app import run

from .conftest import batch_until_first_done

SMALL = ["--model", "tiny", "--size", "64x64"]


def gen(capsys, *args):
    code = run(["generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_single_prompt_writes_png_with_record_and_codes(capsys, tmp_path):
    code, out, err = gen(capsys, "a red fox", *SMALL, "--seed", "7", "--out-dir", str(tmp_path))
    assert code == 0, err
    path = Path(out.strip())
    assert path == tmp_path / "0000-7-a-red-fox.png"
    img = Image.open(path)
    assert img.size == (64, 64)
    record = json.loads(img.text["llada"])
    assert record["prompt"] == "a red fox" and record["seed"] == 7 and record["grid"] == [2, 2]
    assert record["settings"]["decoder"] == "turbo" and record["settings"]["steps"] == 8
    assert "Seed: 7" in img.text["parameters"] and img.text["parameters"].startswith("a red fox\n")
    codes = json.loads((tmp_path / "0000-7-a-red-fox.codes.json").read_text())
    assert len(codes["codes"]) == 4 and all(0 <= c < 256 for c in codes["codes"])


def test_same_seed_gives_the_same_png_bytes(capsys, tmp_path):
    for name in ("a", "b"):
        assert (
            gen(capsys, "a lighthouse", *SMALL, "--seed", "3", "-o", str(tmp_path / name / "x.png"))[0] == 0
        )
    assert (tmp_path / "a" / "x.png").read_bytes() == (tmp_path / "b" / "x.png").read_bytes()
    gen(capsys, "a lighthouse", *SMALL, "--seed", "4", "-o", str(tmp_path / "c.png"))
    assert Image.open(tmp_path / "c.png").tobytes() != Image.open(tmp_path / "a" / "x.png").tobytes()


def test_several_prompts_and_n_give_each_image_its_own_seed(capsys, tmp_path):
    code, out, _ = gen(
        capsys, "cat", "dog", "-n", "2", *SMALL, "--seed", "100", "--out-dir", str(tmp_path), "--json"
    )
    assert code == 0
    rows = records(out)
    assert [(r["prompt"], r["seed"]) for r in rows] == [
        ("cat", 100),
        ("cat", 101),
        ("dog", 102),
        ("dog", 103),
    ]
    assert all(Path(r["path"]).exists() and r["decoder"]["evaluations"] == 8 for r in rows)
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert manifest[0] == {"id": "batch", "state": "batch", "base_seed": 100}
    assert [m["state"] for m in manifest[1:]] == ["codes", "done"] * 4


def test_prompt_files_in_three_formats(capsys, tmp_path):
    (tmp_path / "p.txt").write_text("# a comment\nfirst prompt\n\nsecond prompt\n")
    (tmp_path / "p.csv").write_text('prompt,seed\ncsv one,11\n"csv, two",12\n')
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"prompt": "json one", "seed": 5, "width": 96, "height": 64, "output": "named.png"})
        + "\n"
        + "{broken\n"
        + json.dumps({"prompt": "extra key", "colour": "red"})
        + "\n"
        + json.dumps({"prompt": "bad type", "steps": "many"})
        + "\n"
        + json.dumps({"prompt": "json two", "cfg": 1.0})
        + "\n"
    )
    code, out, _ = gen(
        capsys, "--prompts-file", str(tmp_path / "p.txt"), *SMALL, "--out-dir", str(tmp_path / "t"), "--json"
    )
    assert code == 0 and [r["prompt"] for r in records(out)] == ["first prompt", "second prompt"]
    code, out, _ = gen(
        capsys, "--prompts-file", str(tmp_path / "p.csv"), *SMALL, "--out-dir", str(tmp_path / "c"), "--json"
    )
    assert code == 0 and [(r["prompt"], r["seed"]) for r in records(out)] == [
        ("csv one", 11),
        ("csv, two", 12),
    ]
    code, out, err = gen(
        capsys,
        "--prompts-file",
        str(tmp_path / "p.jsonl"),
        *SMALL,
        "--out-dir",
        str(tmp_path / "j"),
        "--json",
    )
    assert code == 3  # some items failed, the others ran
    rows = records(out)
    assert [r["prompt"] for r in rows] == ["json one", "json two"]
    assert (
        rows[0]["path"] == str(tmp_path / "j" / "named.png")
        and rows[0]["width"] == 96
        and rows[0]["seed"] == 5
    )
    assert Image.open(rows[0]["path"]).size == (96, 64)
    assert rows[1]["settings"]["cfg"] == 1.0
    assert "p.jsonl:2: not valid JSON" in err and "p.jsonl:3: unknown key(s) colour" in err
    assert "p.jsonl:4: steps must be int" in err and "3 of 5 image(s) failed" in err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "holds no prompts"),
        (b"seed,width\n1,64\n", "no 'prompt' column"),
        (b"\xff\xfe bad", "not UTF-8"),
    ],
)
def test_unusable_prompt_files(capsys, tmp_path, content, message):
    path = tmp_path / ("p.csv" if b"seed" in content else "p.txt")
    path.write_bytes(content)
    code, out, err = gen(capsys, "--prompts-file", str(path), *SMALL)
    assert code == 2 and out == "" and message in err


def test_outputs_never_escape_or_overwrite(capsys, tmp_path):
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"prompt": "x", "output": "../escape.png"})
        + "\n"
        + json.dumps({"prompt": "y", "output": "/abs.png"})
        + "\n"
    )
    code, _, err = gen(
        capsys, "--prompts-file", str(tmp_path / "p.jsonl"), *SMALL, "--out-dir", str(tmp_path / "o")
    )
    assert code == 3 and err.count("would leave the output folder") == 2
    assert not (tmp_path / "escape.png").exists()
    target = tmp_path / "keep.png"
    target.write_bytes(b"precious")
    code, _, err = gen(capsys, "z", *SMALL, "-o", str(target))
    assert code == 2 and "exists" in err and target.read_bytes() == b"precious"  # before any work
    # pattern names get a suffix instead of overwriting
    for _ in range(2):
        gen(capsys, "same", *SMALL, "--seed", "1", "--out-dir", str(tmp_path / "s"))
    assert sorted(p.name for p in (tmp_path / "s").glob("*.png")) == ["0000-1-same-1.png", "0000-1-same.png"]


def test_params_from_reproduces_and_decode_redecodes(capsys, tmp_path):
    code, out, _ = gen(capsys, "a harbour at dawn", *SMALL, "--seed", "9", "-o", str(tmp_path / "first.png"))
    assert code == 0
    code, out, _ = gen(
        capsys, "--params-from", str(tmp_path / "first.png"), "-o", str(tmp_path / "again.png")
    )
    assert code == 0
    assert Image.open(tmp_path / "again.png").tobytes() == Image.open(tmp_path / "first.png").tobytes()
    code = run(["decode", str(tmp_path / "first.codes.json"), "--model", "tiny", "--json"])
    row = json.loads(capsys.readouterr().out)
    assert code == 0 and Path(row["path"]).name == "first-turbo-s9.png"
    assert Image.open(row["path"]).tobytes() == Image.open(tmp_path / "first.png").tobytes()
    code = run(
        [
            "decode",
            str(tmp_path / "first.codes.json"),
            "--model",
            "tiny",
            "--decoder",
            "normal",
            "--decoder-steps",
            "4",
            "--json",
        ]
    )
    row = json.loads(capsys.readouterr().out)
    assert code == 0 and row["decoder_evaluations"] == 3 and row["settings"]["decoder"] == "normal"
    assert run(["decode", str(tmp_path / "first.codes.json"), "--model", "tiny"]) == 2  # exists, no --force
    assert "exists" in capsys.readouterr().err


def test_normal_decoder_and_guidance_off(capsys, tmp_path):
    code, out, _ = gen(
        capsys,
        "a field",
        *SMALL,
        "--decoder",
        "normal",
        "--decoder-steps",
        "5",
        "--cfg",
        "1.0",
        "--out-dir",
        str(tmp_path),
        "--json",
    )
    [row] = records(out)
    assert code == 0 and row["decoder"]["evaluations"] == 4 and row["settings"]["cfg"] == 1.0


def test_low_memory_runs_in_phases_loading_each_stage_once(tiny_dir, tmp_path):
    from llada_cli.batch import BatchOptions, BatchRunner, Events, TextToImageJob, plan_items
    from llada_cli.io.manifest import BatchManifest
    from llada_cli.io.promptfiles import Entry
    from llada_cli.settings import DecoderSettings, ImageSettings

    from .conftest import engine_for

    order = []

    class Record(Events):
        def started(self, item, phase):
            order.append((phase, item.index))

    engine = engine_for(tiny_dir, low_memory=True)
    items = plan_items([Entry({"prompt": p}) for p in ("a", "b", "c")], 1, 0, 64, 64)
    job = TextToImageJob(engine, ImageSettings(), DecoderSettings())
    runner = BatchRunner(
        engine,
        job,
        BatchOptions(),
        folder=tmp_path,
        manifest=BatchManifest(tmp_path / "m.jsonl"),
        events=Record(),
    )
    assert runner.run(items) == []
    assert order == [("codes", 0), ("codes", 1), ("codes", 2), ("decode", 0), ("decode", 1), ("decode", 2)]
    assert engine.loads == {"backbone": 1, "decoder": 1} and engine._model is None
    # The next picture (a server's next request, the REPL's next /edit) takes its turn the same way:
    # the decoder goes before the backbone comes back, so the two are never resident together.
    engine.model  # noqa: B018
    assert engine._decoders == {} and engine.loads["backbone"] == 2


def test_resume_after_a_killed_batch_redoes_only_the_unfinished(tmp_path):
    prompts = [f"scene {i}" for i in range(6)]
    proc, cmd, manifest = batch_until_first_done(tmp_path, prompts, 1, text=False)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")}
    assert 0 < len(finished) < 6
    proc = subprocess.run(cmd + ["--resume", "--json"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    redone = [Path(r["path"]).name for r in records(proc.stdout)]
    assert not set(redone) & set(finished)
    assert len(redone) + len(finished) == 6 and len(list(tmp_path.glob("*.png"))) == 6
    assert all(p.stat().st_mtime_ns == finished[p.name] for p in tmp_path.glob("*.png") if p.name in finished)


def test_ctrl_c_stops_the_batch_cleanly_and_resume_finishes_it(tmp_path):
    prompts = [f"view {i}" for i in range(5)]
    proc, cmd, manifest = batch_until_first_done(tmp_path, prompts, 2, text=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    states = [json.loads(line)["state"] for line in manifest.read_text().splitlines()]
    assert "failed" not in states  # an interruption is not an item failure
    assert not list(tmp_path.glob(".*.part"))  # no half-written file
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and len(list(tmp_path.glob("*.png"))) == 5
