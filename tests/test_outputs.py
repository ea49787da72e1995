"""Outputs are never lost or clobbered, and files are written the way users expect (issue 15, §1-§2)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llada_cli.cli.app import run
from llada_cli.errors import UsageError
from llada_cli.io.files import atomic_write_bytes, display_path
from llada_cli.io.imagefiles import read_record, save_image
from llada_cli.io.outputs import Reservations
from llada_cli.io.promptfiles import read_codes_file, read_prompts_file

SMALL = ["--model", "tiny", "--size", "64x64", "--steps", "2"]


def gen(capsys, *args):
    code = run(["generate", *args, "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err
    return code, [json.loads(line) for line in out.splitlines()], err


def _holds(row) -> bool:
    """The file at a printed path is the image the line describes."""
    record = json.loads(Image.open(row["path"]).text["llada"])
    return record["seed"] == row["seed"] and record["prompt"] == row["prompt"]


@pytest.mark.parametrize("extra", [["--low-memory"], ["--force"]])
def test_items_of_one_run_never_share_a_name(capsys, tmp_path, extra):
    (tmp_path / "fox.png").write_bytes(b"old")  # with --force it may be replaced, once
    code, rows, err = gen(
        capsys,
        "fox",
        *SMALL,
        "-n",
        "3",
        "--seed",
        "1",
        "--out-dir",
        str(tmp_path),
        "--name",
        "{slug}.png",
        *extra,
    )
    assert code == 0, err
    paths = [Path(r["path"]).name for r in rows]
    assert len(set(paths)) == 3 and all(_holds(r) for r in rows)
    if "--force" in extra:
        assert paths == ["fox.png", "fox-1.png", "fox-2.png"]
    else:
        assert (tmp_path / "fox.png").read_bytes() == b"old" and "fox.png" not in paths
    assert not list(tmp_path.glob(".*reserved"))  # no lock is left behind


def test_two_items_of_a_file_with_one_output_name(capsys, tmp_path):
    lines = [{"prompt": "a", "output": "same.png"}, {"prompt": "b", "output": "same.png"}]
    (tmp_path / "p.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    code, rows, err = gen(
        capsys,
        "--prompts-file",
        str(tmp_path / "p.jsonl"),
        *SMALL,
        "--out-dir",
        str(tmp_path / "o"),
        "--force",
    )
    assert code == 3 and [r["prompt"] for r in rows] == ["a"] and _holds(rows[0])
    assert "line 2: output 'same.png' is already the output of another item of this run" in err


def test_two_runs_at_once_never_report_one_path(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "llada_cli",
        "generate",
        "x",
        *SMALL,
        "-n",
        "2",
        "--out-dir",
        str(tmp_path),
        "--name",
        "img.png",
        "--json",
    ]
    procs = [
        subprocess.Popen([*cmd, "--seed", str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in (10, 20)
    ]
    rows = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        rows += [json.loads(line) for line in out.splitlines()]
    assert len({r["path"] for r in rows}) == 4 and all(_holds(r) for r in rows)
    assert {r["seed"] for r in rows} == {10, 11, 20, 21}


def test_reservations_are_exclusive_across_runs_and_released(tmp_path):
    a, b = Reservations(tmp_path), Reservations(tmp_path)
    first, second = a.pattern("x.png"), b.pattern("x.png")
    assert first != second and first.name == "x.png" and second.name == "x-1.png"
    assert not first.exists()  # a hidden lock holds the name, not an empty picture
    a.release_all()
    assert Reservations(tmp_path).pattern("x.png").name == "x.png"  # free again
    b.release_all()


def test_names_from_files_cannot_leave_by_a_symlink(capsys, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "o" / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "a", "output": "link/x.png"}) + "\n")
    code, rows, err = gen(
        capsys, "--prompts-file", str(tmp_path / "p.jsonl"), *SMALL, "--out-dir", str(tmp_path / "o")
    )
    assert code == 3 and "leaves the output folder through a symbolic link" in err
    assert not list((tmp_path / "elsewhere").iterdir())


def test_nothing_replaces_a_device_node_or_a_symlink(tmp_path):
    os.mkfifo(tmp_path / "node.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "target.png")
    for name in ("node.png", "link.png"):
        with pytest.raises(UsageError, match="llada only writes regular files"):
            atomic_write_bytes(tmp_path / name, b"x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "node.png").st_mode) and not (tmp_path / "target.png").exists()


def test_a_batch_resumed_from_another_folder_finds_its_work(capsys, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    code, rows, _ = gen(capsys, "one", "two", *SMALL, "--seed", "3", "--out-dir", "out")
    assert code == 0 and len(rows) == 2
    monkeypatch.chdir(tmp_path / "b")
    code, again, err = gen(
        capsys,
        "one",
        "two",
        *SMALL,
        "--seed",
        "3",
        "--out-dir",
        str(tmp_path / "a" / "out"),
        "--resume",
        "-v",
    )
    assert code == 0 and again == [] and err.count("done in an earlier run") == 2


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(capsys, tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        target = tmp_path / "o" / "pic.png"
        target.parent.mkdir()
        target.write_bytes(b"old")
        os.chmod(target, 0o600)
        code, rows, err = gen(capsys, "x", *SMALL, "-o", str(target), "--force")
        assert code == 0, err
        for path in (target, tmp_path / "o" / "pic.codes.json"):
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
    finally:
        os.umask(old)


@pytest.mark.parametrize("suffix, fmt", [(".jpg", "JPEG"), (".webp", "WEBP")])
def test_jpeg_and_webp_are_written_as_such_with_their_record(capsys, tmp_path, suffix, fmt):
    code, [row], err = gen(
        capsys, "a lighthouse", *SMALL, "--seed", "5", "-o", str(tmp_path / f"out{suffix}")
    )
    assert code == 0, err
    assert Image.open(row["path"]).format == fmt
    record = read_record(Path(row["path"]))
    assert record["prompt"] == "a lighthouse" and record["seed"] == 5
    code, [again], _ = gen(
        capsys, "--params-from", row["path"], *SMALL[:4], "-o", str(tmp_path / "again.png")
    )
    assert code == 0 and again["seed"] == 5 and again["prompt"] == "a lighthouse"


def test_records_round_trip_in_every_format(tmp_path):
    record = {"prompt": "ünïcode", "seed": 2, "settings": {"steps": 8}}
    for name in ("a.png", "a.jpg", "a.jpeg", "a.webp"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / name, record)
        assert read_record(tmp_path / name) == record


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    "name, body",
    [
        ("p.txt", b"a red fox\nsecond\n"),
        ("p.csv", b"prompt,seed\na red fox,3\nsecond,4\n"),
        ("p.jsonl", b'{"prompt": "a red fox"}\n{"prompt": "second"}\n'),
    ],
)
def test_files_with_a_byte_order_mark(tmp_path, name, body):
    (tmp_path / name).write_bytes(BOM + body)
    entries = read_prompts_file(tmp_path / name)
    assert [e.error for e in entries] == [None, None]
    assert [e.fields["prompt"] for e in entries] == ["a red fox", "second"]
    (tmp_path / "c.codes.json").write_bytes(BOM + json.dumps({"grid": [1, 1], "codes": [5]}).encode())
    assert read_codes_file(tmp_path / "c.codes.json")["codes"] == [5]


def test_file_lines_go_through_the_flags_rules(capsys, tmp_path):
    lines = [
        '{"prompt": "good", "seed": 1}',
        '{"prompt": "x", "cfg": NaN}',
        '{"prompt": "x", "seed": 1180591620717411303424}',
        '{"prompt": "x", "steps": 0}',
        '{"prompt": "x", "width": 100000}',
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    code, rows, err = gen(
        capsys, "--prompts-file", str(tmp_path / "p.jsonl"), *SMALL, "--out-dir", str(tmp_path / "o")
    )
    assert code == 3 and [r["prompt"] for r in rows] == ["good"]
    for n, text in (
        (2, "cfg nan must be"),
        (3, "seed 1180591620717411303424"),
        (4, "steps 0"),
        (5, "width 100000"),
    ):
        assert f"p.jsonl:{n}: {text}" in err
    edits = [
        {"image": ["a.png", 3], "instruction": "x"},
        {"image": "a.png", "instruction": "x", "cfg_image": -1},
    ]
    (tmp_path / "e.jsonl").write_text("\n".join(map(json.dumps, edits)) + "\n")
    code = run(
        [
            "edit",
            "--edits-file",
            str(tmp_path / "e.jsonl"),
            "--model",
            "tiny",
            "--out-dir",
            str(tmp_path / "e"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3 and "e.jsonl:1: image must be a path or a list of paths" in err
    assert "e.jsonl:2: cfg_image -1 must be a number in [0, 100]" in err


def test_a_path_with_a_newline_is_printed_on_one_line(capsys, tmp_path):
    folder = tmp_path / "a\nb"
    code = run(["generate", "x", *SMALL, "--out-dir", str(folder)])
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n") == 1 and out.startswith("$'") and "\\n" in out
    assert display_path("plain/path.png") == "plain/path.png"


def test_two_outputs_that_differ_only_by_extension_never_share_a_codes_file(tiny_dir, tmp_path, capsys):
    """a.png and a.jpg would both keep their codes in a.codes.json: the second item fails with its line,
    and the first keeps its own picture and codes."""
    from llada_cli.cli.app import run

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "a red fox", "seed": 1, "output": "a.png"}\n{"prompt": "a blue whale", "seed": 2, "output": "a.jpg"}\n')  # fmt: skip
    code = run(["generate", "--prompts-file", str(jobs), "--model", str(tiny_dir), "--device", "cpu", "--size", "64x64", "--steps", "2", "--out-dir", str(tmp_path / "out"), "--low-memory"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3 and "would share its codes file a.codes.json" in err and "line 2" in err
    codes = json.loads((tmp_path / "out" / "a.codes.json").read_text())
    assert codes["prompt"] == "a red fox" and codes["seed"] == 1
    assert not (tmp_path / "out" / "a.jpg").exists()
