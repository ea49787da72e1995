"""The memory planner: component sizes against the spec, activation formulas, and placement decisions."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from llada_cli.checkpoint.layout import weight_files
from llada_cli.checkpoint.safetensors_io import read_headers
from llada_cli.memory import planner as P

GiB = 2**30
GB = 1e9


@pytest.fixture(scope="module")
def real():
    return P.real_model()


def gen(real, gib: float, host: float = 256, **kw) -> P.Plan:
    return P.plan(real, P.Settings("generate", **kw), [int(gib * GiB)], int(host * GiB))


@pytest.mark.parametrize(
    "component, quant, expected_gb",
    [
        ("backbone", "none", 32.6),
        ("backbone", "fp8", 17.3),
        ("backbone", "nf4", 10.7),
        ("decoder", "none", 12.3),
        ("decoder", "int8", 6.2),
        ("decoder", "nf4", 3.5),
    ],
)
def test_weights_match_the_spec(real, component, quant, expected_gb):
    pieces = real.backbone_pieces if component == "backbone" else real.decoder_pieces
    assert sum(pieces[quant]) / GB == pytest.approx(expected_gb, rel=0.04)


def test_bf16_only_components_match_the_spec(real):
    assert real.tokenizer_bytes / GB == pytest.approx(2.40, rel=0.04)
    assert real.vae_bytes / GB == pytest.approx(0.168, rel=0.04)
    assert real.sigvq_bytes / GB == pytest.approx(0.20, rel=0.04)


def test_pieces_are_per_layer_and_per_block(real):
    assert len(real.backbone_pieces["none"]) == real.backbone.num_hidden_layers == 20
    assert len(real.decoder_pieces["none"]) == 30 + 2 + 2  # layers, noise and context refiners
    assert real.backbone_pieces["nf4"][0] == real.backbone_pieces["none"][0]  # layer 0 is dense: no experts


def test_kv_cache_is_40_kb_per_token(real):
    assert P.kv_bytes_per_token(real.backbone) == 40 * 1024


def test_quant_byte_formulas():
    assert P.quant_bytes((4, 64), "none") == 512
    assert P.quant_bytes((4, 64), "int8") == 256 + 4 * 4  # one fp32 scale per output row
    assert P.quant_bytes((4, 64), "nf4") == 128 + 4 * 4  # one fp32 absmax per 64 elements
    assert P.quant_bytes((256, 300), "fp8") == 76800 + 4 * 2 * 3  # ceil on both block dims
    assert P.quant_bytes((2, 256, 300), "fp8") == 2 * (76800 + 24)  # stacked experts: per expert
    assert P.quant_bytes((2, 3, 64), "int8") == 384 + 4 * 6
    with pytest.raises(ValueError):
        P.quant_bytes((4, 4), "int3")
    with pytest.raises(ValueError, match="decoder quant 'fp8'"):
        P.Settings(decoder_quant="fp8")


def test_which_tensors_are_quantized():
    from llada_cli.models.llada2_moe import quant_predicate as expert
    from llada_cli.models.zimage import quant_predicate as q
    from llada_cli.runtime.schemes import quant_bytes

    assert quant_bytes is P.quant_bytes  # one definition, shared by the loaders and the planner
    assert q("layers.0.attention.to_q.weight", (3840, 3840))
    assert q("noise_refiner.1.feed_forward.w2.weight", (3840, 10240))
    assert q("context_refiner.0.attention.to_out.0.weight", (3840, 3840))
    assert q("layers.3.adaLN_modulation.0.weight", (15360, 256))
    assert not q("layers.0.attention_norm1.weight", (3840,))
    assert not q("layers.0.adaLN_modulation.0.bias", (15360,))
    assert not q("all_x_embedder.2-1.weight", (3840, 64))
    assert not q("t_embedder.mlp.0.weight", (1024, 256))
    assert expert("model.layers.3.mlp.experts.17.down_proj.weight")
    assert expert("model.layers.3.mlp.experts.gate_proj")  # stacked layout
    assert not expert("model.layers.3.mlp.shared_experts.up_proj.weight")
    assert not expert("model.layers.3.mlp.gate.weight")


def test_activation_formulas_scale_with_size_and_rows(real):
    d = real.decoder
    assert P.decoder_activations(d, 1024, 1024, 2) == 2 * P.decoder_activations(d, 1024, 1024, 1)
    assert P.decoder_activations(d, 1024, 1024, 1) == 4 * P.decoder_activations(d, 512, 512, 1)
    vae = P.vae_activations(real.vae, 1024, 1024)
    assert vae >= 1.5 * GB and vae <= 3 * GB
    assert P.context_tokens(real, P.Settings("generate", 1024)) == 300 + 1024
    assert P.context_tokens(real, P.Settings("generate", 512)) == 300 + 256
    assert P.context_tokens(real, P.Settings("edit", 1024)) == 300 + 1024 + 1024
    assert P.context_tokens(real, P.Settings("chat")) == 1024 + 2048
    it = P.tokenizer_activations(real.tokenizer, 800)
    assert 2.9 * GiB <= real.tokenizer_bytes + it <= 4 * GiB  # the measured H100 peak was 2.9 GiB in all


def test_commands_run_their_stages(real):
    stages = lambda s: [n.stage for n in P.estimate(real, s)]  # noqa: E731
    assert stages(P.Settings("chat")) == ["backbone"]
    assert stages(P.Settings("chat", images=1)) == ["image_tokenizer", "backbone"]
    assert stages(P.Settings("generate")) == ["backbone", "sigvq", "decoder", "vae"]
    assert stages(P.Settings("interleave")) == stages(P.Settings("generate"))
    assert stages(P.Settings("edit"))[0] == "image_tokenizer"
    edit = {n.stage: n for n in P.estimate(real, P.Settings("edit"))}
    two = {n.stage: n for n in P.estimate(real, P.Settings("edit", rows=2))}
    assert edit["backbone"].activations > two["backbone"].activations  # 3 guidance rows by default


# GiB, as cards are sold; generate 1024 px in bf16 needs 49.0 GB resident and 34.2 GB phased
SINGLE_GPU = {80: "resident", 48: "resident", 40: "phased", **dict.fromkeys((24, 16, 12, 8), "offload")}


@pytest.mark.parametrize("gib, strategy", SINGLE_GPU.items())
def test_single_gpu_generate_1024_bf16(real, gib, strategy):
    plan = gen(real, gib)
    assert plan.strategy == strategy
    assert plan.peak["cuda:0"] <= gib * GiB
    assert {p.stage: p.device for p in plan.stages}["vae"] == "cuda:0"
    if strategy == "offload":
        backbone = plan.stages[0]
        assert "cpu" in backbone.layer_devices and backbone.layer_devices[0] == "cuda:0"
        assert backbone.device == "cuda:0" and backbone.offload  # runs on the GPU, weights stream in
        assert plan.suggestions and any("--quant nf4" in s for s in plan.suggestions)
    else:
        assert plan.peak["cpu"] == P.HOST_RESERVE


def test_eight_gb_streams_the_decoder_and_suggests(real):
    plan = gen(real, 8)
    decoder = next(p for p in plan.stages if p.stage == "decoder")
    assert decoder.offload and decoder.device == "cuda:0"
    assert "layers" in plan.reason and "slow" in plan.reason


def test_nf4_suggestion_changes_the_strategy_at_24_gb(real):
    assert "--quant nf4 (-> phased)" in gen(real, 24).suggestions
    assert gen(real, 24, quant="nf4").strategy == "phased"


def test_chat_nf4_fits_12_gb(real):
    plan = P.plan(real, P.Settings("chat", quant="nf4"), [12 * GiB], 64 * GiB)
    assert plan.strategy in ("resident", "phased")
    assert [(p.stage, p.device) for p in plan.stages] == [("backbone", "cuda:0")]
    assert not plan.suggestions


def test_two_24_gb_gpus_split_with_the_decoder_on_the_freer(real):
    plan = P.plan(real, P.Settings("generate"), [22 * GiB, 24 * GiB], 256 * GiB)
    assert plan.strategy == "split"
    where = {p.stage: p for p in plan.stages}
    assert where["decoder"].device == "cuda:1" and where["vae"].device == "cuda:1"
    layers = where["backbone"].layer_devices
    assert len(layers) == 20 and set(layers) == {"cuda:0", "cuda:1"}
    assert layers == sorted(layers)  # contiguous: layers only move forward through the devices
    assert plan.peak["cuda:0"] <= 22 * GiB and plan.peak["cuda:1"] <= 24 * GiB


def test_a_gpu_that_fits_everything_wins_over_split(real):
    plan = P.plan(real, P.Settings("generate"), [24 * GiB, 80 * GiB], None)
    assert plan.strategy == "resident" and {p.device for p in plan.stages} == {"cuda:1"}


def test_split_needs_the_other_stages_to_fit_the_freest_gpu(real):
    plan = P.plan(real, P.Settings("generate"), [12 * GiB, 12 * GiB, 12 * GiB], 256 * GiB)
    assert plan.strategy == "offload"  # the 13.5 GB decoder phase fits none of them: it streams


def test_no_gpu_runs_on_the_cpu_and_says_so(real):
    plan = P.plan(real, P.Settings("generate"), [], 256 * GiB)
    assert plan.strategy == "cpu"
    assert "CPU" in plan.reason and "NO GPU" in plan.reason
    assert {p.device for p in plan.stages} == {"cpu"} and list(plan.peak) == ["cpu"]
    assert plan.peak["cpu"] >= 2 * 32.6 * GB  # fp32 on the CPU


@pytest.mark.parametrize("gpus", [[8 * GiB], []])
def test_tiny_host_ram_does_not_fit(real, gpus):
    plan = P.plan(real, P.Settings("generate"), gpus, 4 * GiB)
    assert plan.strategy == "does-not-fit"
    assert "host RAM" in plan.reason and plan.suggestions


def test_max_vram_caps_each_gpu(real):
    capped = P.plan(real, P.Settings("generate"), [80 * GiB], 256 * GiB, max_vram=16)
    same = P.plan(real, P.Settings("generate"), [int(16 * GB)], 256 * GiB)
    assert capped.strategy == same.strategy == "offload"
    assert capped.peak == same.peak and capped.peak["cuda:0"] <= 16 * GB
    assert "a larger --max-vram (-> resident)" in capped.suggestions


@pytest.mark.parametrize("command", ["chat", "generate", "edit"])
@pytest.mark.parametrize("quant", ["none", "nf4"])
def test_more_vram_never_gives_a_worse_strategy(real, command, quant):
    needs = P.estimate(real, P.Settings(command, quant=quant))
    ranks = [P.RANK[P.place(needs, [g * GiB], 64 * GiB).strategy] for g in range(1, 100)]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[-1] == 0 and ranks[0] >= P.RANK["offload"]


def test_more_host_ram_never_gives_a_worse_strategy(real):
    needs = P.estimate(real, P.Settings("generate"))
    ranks = [P.RANK[P.place(needs, [8 * GiB], h * GiB).strategy] for h in range(1, 80, 3)]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] == P.RANK["does-not-fit"]


def test_plan_for_the_tiny_checkpoint(tiny_dir):
    plan = P.plan(P.checkpoint_model(tiny_dir), P.Settings("generate", size=64), [8 * GiB], 8 * GiB)
    assert plan.strategy == "resident"
    stored = read_headers(weight_files(tiny_dir, "backbone")).values()  # bf16, the router bias fp32
    assert plan.stages[0].stage == "backbone"
    assert plan.stages[0].weights == sum(math.prod(t.shape) * P.DTYPE_BYTES[t.dtype] for t in stored)
    normal = P.checkpoint_model(tiny_dir, "normal")
    cpu = P.plan(normal, P.Settings("chat", decoder="normal"), [], 8 * GiB)
    assert cpu.strategy == "cpu"


def test_plan_to_dict_and_render(real):
    plan = gen(real, 8)
    data = json.loads(json.dumps(P.plan_to_dict(plan)))
    assert data["strategy"] == "offload" and data["stages"][0]["stage"] == "backbone"
    lines = P.render_plan(plan)
    assert lines[0].split()[:2] == ["stage", "device"]
    assert any(line.startswith("backbone") and "on cpu" in line for line in lines)
    assert any(line.startswith("offload:") for line in lines)


def test_memory_table(real):
    table = P.memory_table().splitlines()
    assert table[0].startswith("| case |") and len(table) == 2 + 3 * 4
    assert any(row.startswith("| generate 1024x1024 turbo | nf4 / nf4 |") for row in table)


def test_importing_the_planner_does_not_import_torch():
    code = "import sys, llada_cli.memory.planner; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
