"""Quantization on load: packed experts and decoder linears, FP8 kept or dequantised, the summary, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from llada_cli.checkpoint.components import dequantize_blocks, load_backbone, load_decoder
from llada_cli.errors import CheckpointMismatch
from llada_cli.runtime import quant
from llada_cli.runtime.quant import PackedWeights, quantize_fp8_blocks

from .test_cli import cli


def _stack(scheme, e=3, out=64, inp=96):
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(e, out, inp, generator=g)
    stack = PackedWeights(scheme, (e, out, inp), torch.float32, "cpu")
    for i in range(e):
        stack.store(i, weights[i])
    return stack, weights


def test_int8_rows_are_within_half_a_step_of_their_absmax():
    stack, w = _stack("int8")
    step = w.abs().amax(-1, keepdim=True) / 127
    assert ((stack[torch.arange(3)] - w).abs() <= step / 2 + 1e-6).all()
    assert stack.q.dtype == torch.int8 and stack.nbytes() < w.numel() * 2 / 1.9


def test_nf4_is_close_and_a_quarter_of_bf16():
    stack, w = _stack("nf4")
    err = (stack[torch.arange(3)] - w).abs() / w.abs().amax()
    assert err.max() < 0.2 and err.mean() < 0.05  # 16 levels over each 64-element block's absmax
    assert stack.nbytes() == w.numel() // 2 + 4 * w.numel() // 64


@pytest.mark.parametrize("scheme", ["int8", "nf4", "fp8"])
def test_indexing_one_expert_or_several_gives_the_same_matrices(scheme):
    stack, _ = _stack(scheme)
    several = stack[torch.tensor([2, 0])]
    assert several.shape == (2, 64, 96) and several.dtype == torch.float32
    assert torch.equal(several[0], stack[2]) and torch.equal(several[1], stack[0])


def test_fp8_blocks_round_trip_like_the_checkpoint_format():
    w = torch.randn(200, 130)
    q, scale_inv = quantize_fp8_blocks(w, (128, 128))
    assert q.dtype == torch.float8_e4m3fn and scale_inv.shape == (2, 2)
    back = dequantize_blocks(q, scale_inv, (128, 128))
    assert ((back - w).abs() <= w.abs().amax() / 448 * 16 + 1e-6).all()  # e4m3 keeps 3 mantissa bits


def test_a_stack_that_never_received_an_expert_is_refused(tiny_copy, monkeypatch):
    stack = PackedWeights("int8", (2, 64, 64), torch.float32, "cpu")
    stack.store(0, torch.randn(64, 64))
    assert stack.missing() == [1]
    from llada_cli.checkpoint.components import _check_no_meta

    holder = torch.nn.Module()
    holder.experts = stack
    with pytest.raises(CheckpointMismatch, match=r"experts \[1\]"):
        _check_no_meta(holder)


@pytest.mark.parametrize("scheme,tol", [("int8", 0.01), ("nf4", 0.06)])
def test_quantized_backbone_matches_the_full_precision_one(tiny_dir, scheme, tol):
    ref = load_backbone(tiny_dir, dtype=torch.float32)
    packed = load_backbone(tiny_dir, dtype=torch.float32, quant=scheme)
    report = packed.quant_report
    moe_layers = ref.cfg.num_hidden_layers - ref.cfg.first_k_dense_replace
    assert len(report.quantized) == 3 * moe_layers and report.scheme == scheme
    assert all(".mlp." in name and name.endswith("_proj") for name in report.quantized)
    assert report.quantized_params == moe_layers * 3 * ref.cfg.num_experts * 64 * 32
    assert report.kept_params + report.quantized_params == sum(p.numel() for p in ref.parameters()) + sum(
        b.numel() for b in ref.buffers()
    )
    assert report.bytes < ref.quant_report.bytes / 2
    ids, pos = (
        torch.randint(0, 700, (1, 40), generator=torch.Generator().manual_seed(0)),
        torch.arange(40)[None],
    )
    a, b = ref(ids, pos), packed(ids, pos)
    assert (a - b).abs().mean() < tol * a.abs().mean()  # mean: a rounding can flip one token's expert


def test_packed_experts_run_both_dispatch_paths_alike(tiny_dir, monkeypatch):
    from llada_cli.models import llada2_moe

    model = load_backbone(tiny_dir, dtype=torch.float32, quant="nf4")
    ids, pos = torch.randint(0, 700, (2, 32)), torch.arange(32)[None].expand(2, -1)
    loop = model(ids, pos)
    monkeypatch.setattr(llada2_moe, "BATCHED_DISPATCH", "always")
    assert torch.allclose(model(ids, pos), loop, atol=1e-4)


def test_fp8_checkpoint_kept_in_fp8_equals_dequantised_at_load(tiny_fp8_dir, monkeypatch):
    dequantised = load_backbone(tiny_fp8_dir, dtype=torch.float32)
    assert dequantised.quant_report.scheme == "none" and "dequantised" in dequantised.quant_report.note
    monkeypatch.setattr(quant, "FP8_KEEP", "always")  # what an FP8 GPU does
    kept = load_backbone(tiny_fp8_dir, dtype=torch.float32)
    assert kept.quant_report.scheme == "fp8"
    mlp = kept.model.layers[1].mlp
    assert mlp.gate_proj.q.dtype == torch.float8_e4m3fn
    assert torch.equal(mlp.gate_proj[torch.arange(4)], dequantised.model.layers[1].mlp.gate_proj[:4])
    ids, pos = torch.randint(0, 700, (1, 40)), torch.arange(40)[None]
    assert torch.allclose(kept(ids, pos), dequantised(ids, pos), atol=1e-5)


def test_fp8_and_bf16_checkpoints_agree_on_greedy_text(tiny_dir, tiny_fp8_dir):
    """The FP8 tiny holds the bf16 tiny's experts rounded to e4m3: greedy decoding agrees for a few steps."""
    from llada_cli.pipelines.runner import BackboneRunner
    from llada_cli.sampling.block_diffusion import run
    from llada_cli.sampling.settings import SamplerSettings

    prompt = list(range(5, 45))
    settings = SamplerSettings(block_length=32, steps=8, threshold=0.95)
    outs = []
    for root in (tiny_dir, tiny_fp8_dir):
        model = load_backbone(root, dtype=torch.float32)
        outs.append(
            run(
                BackboneRunner(model, [prompt], 2, 8, settings),
                prompt,
                2,
                settings,
                gen_length=8,
                vocab_range=(0, 768),
            )
        )
    assert outs[0] == outs[1] and len(outs[0]) == 8


def test_decoder_linears_are_packed_and_close(tiny_dir):
    ref = load_decoder(tiny_dir, "decoder-turbo", "cpu", torch.float32)
    packed = load_decoder(tiny_dir, "decoder-turbo", "cpu", torch.float32, quant="int8")
    names = packed.quant_report.quantized
    assert names and all(n.startswith(("layers.", "noise_refiner.", "context_refiner.")) for n in names)
    assert not any("embedder" in n for n in names)
    layer = packed.layers[0].attention.to_q
    assert isinstance(layer, quant.QuantLinear)
    x = torch.randn(5, layer.in_features)
    expected = ref.layers[0].attention.to_q(x)
    assert (layer(x) - expected).abs().max() < 0.02 * expected.abs().max()


def test_chat_and_generate_run_quantized_end_to_end(capsys, tmp_path):
    code, out, err = cli(
        capsys,
        "chat",
        "hi",
        "--model",
        "tiny",
        "--quant",
        "nf4",
        "--max-tokens",
        "8",
        "--seed",
        "1",
        "--json",
    )
    assert code == 0
    record = json.loads(out)
    assert record["quant"]["scheme"] == "nf4" and record["quant"]["quantized_tensors"] == 6
    assert "in nf4" in err and "kept in full precision" in err
    code, out, err = cli(
        capsys, "generate", "a fox", "--model", "tiny", "--size", "256x256", "--seed", "1", "--quant", "int8",
        "--decoder-quant", "nf4", "--out-dir", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0
    record = json.loads(out.splitlines()[0])
    assert record["settings"]["quant"] == "int8" and record["settings"]["decoder_quant"] == "nf4"
    assert (tmp_path / record["path"].split("/")[-1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "decoder-turbo:" in err and "in nf4" in err


def test_quiet_hides_the_quant_summary(capsys):
    code, _, err = cli(capsys, "-q", "chat", "hi", "--model", "tiny", "--quant", "int8", "--max-tokens", "4")
    assert code == 0 and "llada.quant" not in err


def test_the_fp8_checkpoint_generates_an_image_and_says_it_dequantised(capsys, tmp_path):
    code, out, err = cli(
        capsys, "generate", "a fox", "--model", "tiny-fp8", "--size", "256x256", "--seed", "2",
        "-o", str(tmp_path / "fox.png"), "--json",
    )  # fmt: skip
    assert code == 0 and (tmp_path / "fox.png").read_bytes()[:4] == b"\x89PNG"
    assert "no FP8 support" in err  # this CPU cannot keep FP8: it says so instead of doing it silently
    code, out, err = cli(capsys, "chat", "hi", "--model", "tiny-fp8", "--quant", "fp8", "--max-tokens", "4")
    assert code == 2 and out == "" and "compute capability 8.9" in err  # asked for and impossible here


def test_stacked_fp8_experts_with_scale_naming_load_alike(tiny_fp8_dir, tmp_path, monkeypatch):
    """The FP8 format's other spellings: experts stacked [E, out, in] (the veomni layout) and block scales
    named `_scale` instead of `_scale_inv`; kept in FP8 or dequantised, the model is the same."""
    import shutil
    from collections import defaultdict

    from safetensors.torch import load_file, save_file

    from llada_cli.checkpoint.components import inspect_component

    root = tmp_path / "stacked"
    shutil.copytree(tiny_fp8_dir, root)
    state = {}
    for shard in sorted(root.glob("model-*.safetensors")):
        state |= load_file(shard)
        shard.unlink()
    (root / "model.safetensors.index.json").unlink()
    stacks: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    out = {}
    for name, t in state.items():
        if ".mlp.experts." in name:  # model.layers.L.mlp.experts.E.gate_proj.weight[_scale_inv]
            head, rest = name.split(".experts.")
            e, proj, kind = rest.split(".", 2)
            suffix = "_scale" if kind.endswith("_scale_inv") else ""
            stacks[f"{head}.experts.{proj}{suffix}"][int(e)] = t
        else:
            out[name] = t
    out |= {k: torch.stack([v[e] for e in sorted(v)]) for k, v in stacks.items()}
    save_file(out, root / "model.safetensors")
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps(config | {"model_type": "llada2_moe_veomni"}))
    assert inspect_component(root, "backbone").tensors == len(out)

    reference = load_backbone(tiny_fp8_dir, dtype=torch.float32)
    ids, pos = torch.randint(0, 700, (1, 40)), torch.arange(40)[None]
    assert torch.equal(load_backbone(root, dtype=torch.float32)(ids, pos), reference(ids, pos))
    monkeypatch.setattr(quant, "FP8_KEEP", "always")
    kept = load_backbone(root, dtype=torch.float32)
    assert kept.quant_report.scheme == "fp8"
    assert torch.allclose(kept(ids, pos), reference(ids, pos), atol=1e-5)
