"""One set of settings for every command: the sampler's options reach chat, generate, edit and interleave
alike, records carry them, and `--params-from` reads them back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from llada_cli.cli.app import run
from llada_cli.errors import UsageError
from llada_cli.sampling.block_diffusion import sample_tokens
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.settings import ChatSettings, EditSettings, ImageSettings, InterleaveSettings

SUNSET = str(Path(__file__).resolve().parent.parent / "examples" / "images" / "sunset.png")
SMALL = ["--model", "tiny", "--size", "64x64", "--steps", "2"]
SAMPLING = ["--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.05", "--seed", "4"]


def test_settings_are_frozen_keyword_only_and_nest_one_sampler():
    for cls in (ChatSettings, ImageSettings, EditSettings, InterleaveSettings, SamplerSettings):
        with pytest.raises(TypeError):
            cls(1)  # keyword-only
        with pytest.raises(dataclasses.FrozenInstanceError):
            cls().__setattr__(
                "seed" if cls is ChatSettings else "sprint" if cls is SamplerSettings else "cfg", 1
            )
    samplers = [
        f.type
        for cls in (ChatSettings, ImageSettings, EditSettings, InterleaveSettings)
        for f in dataclasses.fields(cls)
    ]
    assert samplers.count("SamplerSettings") == 6  # chat, image (+thinking), edit, interleave (text, image)
    with pytest.raises(UsageError, match="--min-p 1.5 must be a number in \\[0, 1\\]"):
        SamplerSettings(min_p=1.5)


def test_min_p_drops_the_unlikely_tokens():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.06, 0.04]]))
    settings = SamplerSettings(temperature=1.0, min_p=0.2)  # keeps p >= 0.2 * 0.6 = 0.12
    drawn = {int(sample_tokens(logits, settings, torch.Generator().manual_seed(s))[0]) for s in range(200)}
    assert drawn == {0, 1}
    everything = SamplerSettings(temperature=1.0)
    assert {
        int(sample_tokens(logits, everything, torch.Generator().manual_seed(s))[0]) for s in range(200)
    } == {
        0,
        1,
        2,
        3,
    }


def test_filters_see_the_tempered_distribution_as_the_official_sampler_does():
    """Official rule (spec backbone.md §5.1): divide the logits by T, then filter top-k/top-p, then draw.
    At T=2 the tempered probabilities of logits [2, 1, 0] are [0.51, 0.31, 0.19], so top-p 0.6 keeps two
    tokens; filtering before the temperature ([0.67, 0.24, 0.09]) would keep one."""
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    settings = SamplerSettings(temperature=2.0, top_p=0.6)
    drawn = {int(sample_tokens(logits, settings, torch.Generator().manual_seed(s))[0]) for s in range(200)}
    assert drawn == {0, 1}
    min_p = SamplerSettings(temperature=2.0, min_p=0.5)  # tempered: 0.31 >= 0.5 * 0.51 keeps token 1
    assert {int(sample_tokens(logits, min_p, torch.Generator().manual_seed(s))[0]) for s in range(200)} == {0, 1}


def test_a_sampler_option_reaches_every_command_and_its_records(capsys, tmp_path):
    expected = {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.05}

    def json_lines(args):
        code = run(args)
        out, err = capsys.readouterr()
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines()]

    [chat] = json_lines(["chat", "hi", "--model", "tiny", "--max-tokens", "8", *SAMPLING, "--json"])
    [image] = json_lines(["generate", "x", *SMALL, *SAMPLING, "-o", str(tmp_path / "g.png"), "--json"])
    [edit] = json_lines(["edit", SUNSET, "blue", *SMALL, *SAMPLING, "-o", str(tmp_path / "e.png"), "--json"])
    doc = json_lines(
        [
            "interleave",
            "tea",
            "--model",
            "tiny",
            "--max-new-tokens",
            "8",
            "--steps",
            "2",
            *SAMPLING,
            "--out-dir",
            str(tmp_path / "d"),
            "--json",
        ]
    )
    document = json.loads((tmp_path / "d" / "document.json").read_text())
    for settings in (chat["settings"], image["settings"], edit["settings"], document["settings"]["text"]):
        assert {k: settings[k] for k in expected} == expected
    assert doc[-1]["event"] == "done"
    png = json.loads(Image.open(tmp_path / "g.png").text["llada"])["settings"]
    assert {k: png[k] for k in expected} == expected
    [again] = json_lines(
        ["generate", "--params-from", str(tmp_path / "g.png"), "-o", str(tmp_path / "again.png"), "--json"]
    )
    assert {k: again["settings"][k] for k in expected} == expected  # read back from the record
    assert Image.open(tmp_path / "again.png").tobytes() == Image.open(tmp_path / "g.png").tobytes()
    [flag_wins] = json_lines(
        [
            "generate",
            "--params-from",
            str(tmp_path / "g.png"),
            "--min-p",
            "0",
            "-o",
            str(tmp_path / "w.png"),
            "--json",
        ]
    )
    assert flag_wins["settings"]["min_p"] == 0.0 and flag_wins["settings"]["top_k"] == 20
