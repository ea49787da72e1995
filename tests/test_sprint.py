"""SPRINT: adaptive unmasking, confidence rankings, the pruned prefix cache, and every CLI switch."""

from __future__ import annotations

import json
import math

import pytest
import torch

from llada_cli.cli.app import run
from llada_cli.errors import UsageError
from llada_cli.pipelines.runner import BackboneRunner
from llada_cli.sampling.block_diffusion import adaptive_transfer, confidence_score
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.sampling.sprint import SprintSettings


def test_adaptive_k_is_ceil_of_masked_over_steps_left_plus_confident_ones():
    active = torch.ones(10, dtype=torch.bool)
    score = torch.arange(10, dtype=torch.float32)  # position 9 is the best ranked
    conf = torch.full((10,), 0.5)
    conf[0] = conf[1] = 0.99  # above threshold but ranked last
    chosen = adaptive_transfer(score, conf, active, steps_left=3, threshold=0.95)
    assert math.ceil(10 / 3) == 4
    assert set(chosen.nonzero().flatten().tolist()) == {9, 8, 7, 6, 0, 1}
    active[5:] = False
    chosen = adaptive_transfer(score, torch.zeros(10), active, steps_left=1, threshold=0.95)
    assert chosen.nonzero().flatten().tolist() == [0, 1, 2, 3, 4]  # the last step takes everything left


def test_confidence_rankings():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.45, 0.1, 0.45], [0.4, 0.3, 0.3]])
    assert confidence_score(probs, "low").argmax().item() == 0
    assert confidence_score(probs, "margin").argmax().item() == 2  # the clearest lead
    entropy = confidence_score(probs, "entropy")
    assert entropy.argmax().item() == 0 and (entropy <= 0).all()
    with pytest.raises(UsageError, match="--confidence 'vibes' is not one of low, margin, entropy"):
        SprintSettings(confidence="vibes")


@pytest.fixture(scope="module")
def model(tiny_dir):
    from llada_cli.checkpoint.components import load_backbone

    return load_backbone(tiny_dir, "cpu", torch.float32)


def test_pruned_cache_keeps_the_requested_share_of_each_modality(model):
    offset = model.cfg.image_token_offset
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 700, (40,), generator=g).tolist()
    image = (offset + torch.randint(0, 256, (24,), generator=g)).tolist()
    prompt = text + image  # 64 tokens: two whole blocks in the cache
    sprint = SprintSettings(keep_ratio=0.5, image_keep_ratio=0.25, text_keep_ratio=1.0, confidence_alpha=0.3)
    runner = BackboneRunner(
        model, [prompt], mask_id=2, gen_length=32, settings=SamplerSettings(block_length=32, sprint=sprint)
    )
    runner.commit(torch.tensor(prompt), 0)
    block = torch.full((32,), 2)
    first = runner.logits(block, 64)
    assert runner.cache.attn_mass[:64].sum() > 0  # the warm-up step gathered attention
    runner.prune(64)
    view = runner.cache.view.tolist()
    assert sum(p >= 40 for p in view) == math.ceil(24 * 0.25) and sum(p < 40 for p in view) == 40
    pruned = runner.logits(block, 64)
    assert pruned.shape == first.shape and torch.isfinite(pruned).all()
    runner.commit(block, 64)
    assert runner.cache.view is None and runner.cache.length == 96


def test_keeping_everything_is_exact(model):
    prompt = torch.randint(0, 700, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    exact = BackboneRunner(model, [prompt], 2, 32, SamplerSettings(block_length=32))
    sprint = BackboneRunner(
        model, [prompt], 2, 32, SamplerSettings(block_length=32, sprint=SprintSettings(keep_ratio=1.0))
    )
    block = torch.full((32,), 2)
    for r in (exact, sprint):
        r.commit(torch.tensor(prompt), 0)
    sprint.logits(block, 64)
    sprint.prune(64)
    assert len(sprint.cache.view) == 64
    assert torch.allclose(sprint.logits(block, 64), exact.logits(block, 64), atol=1e-5)


def cli(capsys, *args):
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


SPRINT = [
    "--sprint",
    "--keep-ratio",
    "0.4",
    "--image-keep-ratio",
    "0.3",
    "--text-keep-ratio",
    "0.9",
    "--confidence-alpha",
    "0.7",
    "--cache-warmup-steps",
    "2",
]


@pytest.mark.parametrize("confidence", ["low", "margin", "entropy"])
def test_chat_with_every_sprint_switch(capsys, confidence):
    code, out, err = cli(
        capsys,
        "chat",
        "hello there",
        "--model",
        "tiny",
        "--max-tokens",
        "64",
        "--seed",
        "1",
        *SPRINT,
        "--confidence",
        confidence,
        "--json",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["settings"]["sprint"] == {
        "keep_ratio": 0.4,
        "image_keep_ratio": 0.3,
        "text_keep_ratio": 0.9,
        "confidence_alpha": 0.7,
        "warmup_steps": 2,
        "confidence": confidence,
    }
    assert record["settings"]["sprint"]["confidence"] == confidence


def test_generate_and_interleave_with_sprint(capsys, tmp_path):
    code, out, err = cli(
        capsys,
        "generate",
        "a fox",
        "--model",
        "tiny",
        "--size",
        "128x128",
        *SPRINT,
        "--seed",
        "2",
        "--out-dir",
        str(tmp_path / "g"),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["settings"]["sprint"]["keep_ratio"] == 0.4
    code, out, err = cli(
        capsys,
        "interleave",
        "tea",
        "--model",
        "tiny",
        "--max-new-tokens",
        "64",
        *SPRINT,
        "--out-dir",
        str(tmp_path / "i"),
        "--json",
    )
    assert code == 0, err


def test_editing_with_image_guidance_falls_back_and_says_so_once(capsys, tmp_path):
    from pathlib import Path

    shapes = str(Path(__file__).resolve().parent.parent / "examples" / "images" / "shapes.png")
    code, out, err = cli(
        capsys,
        "edit",
        "-i",
        shapes,
        "make it blue",
        "--model",
        "tiny",
        "--size",
        "64x64",
        "--cfg-image",
        "1.0",
        "--sprint",
        "-o",
        str(tmp_path / "e.png"),
        "--steps",
        "2",
    )
    assert code == 0, err
    assert err.count("--sprint does not apply with image guidance") == 1


def test_bad_sprint_values_are_usage_errors(capsys):
    code, _, err = cli(capsys, "chat", "x", "--model", "tiny", "--sprint", "--keep-ratio", "1.5")
    assert code == 2 and "--keep-ratio 1.5 must be a number in (0, 1]" in err
