"""Routed-expert dispatch: the grouped path (torch._grouped_mm on the weights in place, no host sync) gives
the per-expert loop's outputs, for plain, quantized and host-held experts; it compiles as one graph and,
on a GPU, captures in a CUDA graph."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

from llada_cli.checkpoint.components import load_backbone
from llada_cli.errors import UsageError
from llada_cli.models import llada2_moe, moe_dispatch
from llada_cli.models.llada2_moe import BackboneConfig, MoE
from llada_cli.runtime.placement import HostExperts
from llada_cli.runtime.quant import PackedWeights
from llada_cli.weights.tiny import MID_BACKBONE

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def tiny_moe(tiny_dir) -> MoE:
    return load_backbone(tiny_dir, dtype=torch.float32).model.layers[1].mlp


@pytest.fixture(scope="module")
def mid_moe() -> MoE:
    torch.manual_seed(0)
    moe = MoE(BackboneConfig.from_dict(MID_BACKBONE)).eval()  # one MoE layer of the mid config
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0.0, 0.02)
        moe.gate.expert_bias.normal_(0.0, 0.01)
    return moe


def run(moe: MoE, x: torch.Tensor, how: str, monkeypatch) -> torch.Tensor:
    monkeypatch.setattr(llada2_moe, "MOE_DISPATCH", how)
    assert moe.dispatch_for(x.reshape(-1, x.shape[-1])) == how
    with torch.no_grad():
        return moe(x)


@contextmanager
def favouring(moe: MoE, experts: list[int]):
    """Every token's routing picks `experts` first (a bias far above any sigmoid score)."""
    bias = moe.gate.expert_bias
    saved = bias.clone()
    bias[experts] += 10.0
    try:
        yield
    finally:
        bias.copy_(saved)


def routed_ids(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    return moe._route(x.reshape(-1, x.shape[-1]))[0]


BLOCKS = ("two rows of 32", "one token", "one expert takes every token", "most experts get none")


def block(moe: MoE, name: str):
    """(input, experts to favour) for each block shape the dispatch must get right."""
    g = torch.Generator().manual_seed(1)
    d, k = moe.cfg.hidden_size, moe.cfg.num_experts_per_tok
    x = torch.randn(2, 32, d, generator=g)
    if name == "one token":
        return x[:1, :1], []
    if name == "one expert takes every token":
        return x, [5]
    if name == "most experts get none":
        return x, list(range(k))  # all in group 0, so each token gets exactly these
    return x, []


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("config", ["tiny", "mid"])
def test_grouped_and_batched_equal_the_loop(request, monkeypatch, config, name):
    moe = request.getfixturevalue(f"{config}_moe")
    x, favoured = block(moe, name)
    with favouring(moe, favoured):
        ids = routed_ids(moe, x)
        if name == "one expert takes every token":
            assert (ids == 5).any(-1).all()
        if name == "most experts get none":
            assert ids.unique().numel() == moe.cfg.num_experts_per_tok
        loop = run(moe, x, "loop", monkeypatch)
        for how in ("grouped", "batched"):
            assert (run(moe, x, how, monkeypatch) - loop).abs().max() <= 1e-5, how


def packed(moe: MoE, scheme: str) -> MoE:
    """The same layer with its expert stacks quantized (PackedWeights) or held by HostExperts."""
    out = copy.deepcopy(moe)
    for name in ("gate_proj", "up_proj", "down_proj"):
        weights = out._parameters.pop(name).data
        if scheme == "host":
            out.add_module(name, HostExperts(weights, "cpu"))
            continue
        stack = PackedWeights(scheme, weights.shape, torch.float32, "cpu", fp8_block=(16, 16))
        for e in range(weights.shape[0]):
            stack.store(e, weights[e])
        out.add_module(name, stack)
    return out


@pytest.mark.parametrize("scheme", ["int8", "nf4", "fp8", "host"])
def test_quantized_and_host_experts_run_grouped_like_the_loop(tiny_moe, monkeypatch, scheme):
    moe = packed(tiny_moe, scheme)
    monkeypatch.setattr(llada2_moe, "MOE_DISPATCH", "auto")
    x, _ = block(moe, "two rows of 32")
    assert moe.dispatch_for(x.reshape(-1, x.shape[-1])) == "grouped"
    grouped = run(moe, x, "grouped", monkeypatch)
    assert (grouped - run(moe, x, "loop", monkeypatch)).abs().max() <= 1e-5
    if scheme == "host":
        assert torch.equal(grouped, run(tiny_moe, x, "grouped", monkeypatch))


def test_group_ends_mark_empty_experts_without_counting():
    experts = torch.tensor([0, 0, 2, 2, 2, 5])
    ends = moe_dispatch.group_ends(experts, 7)
    assert ends.dtype == torch.int32 and ends.tolist() == [2, 2, 5, 5, 5, 6, 6]


def test_auto_takes_grouped_only_where_grouped_mm_runs(tiny_moe, monkeypatch):
    supported = moe_dispatch.grouped_supported
    cpu = torch.device("cpu")
    assert supported(cpu, torch.float32, (64, 32)) and supported(cpu, torch.bfloat16, (64, 32))
    assert not supported(cpu, torch.float64, (64, 32))  # no float64 kernel
    assert not supported(cpu, torch.float32, (64, 30))  # a row of 120 bytes is not 16-byte aligned
    x = torch.randn(4, tiny_moe.cfg.hidden_size)
    assert tiny_moe.dispatch_for(x) == "grouped"
    assert tiny_moe.dispatch_for(x.double()) == "loop"
    prefill = torch.randn(llada2_moe.CPU_GROUPED_MAX_TOKENS + 1, tiny_moe.cfg.hidden_size)
    assert tiny_moe.dispatch_for(prefill) == "loop"  # measured: the loop keeps its tensors in cache
    monkeypatch.setattr(llada2_moe, "BATCHED_DISPATCH", "always")  # the former switch still wins
    assert tiny_moe.dispatch_for(x) == "batched"
    monkeypatch.setattr(llada2_moe, "BATCHED_DISPATCH", "cuda")
    monkeypatch.setattr(llada2_moe, "MOE_DISPATCH", "fastest")  # LLADA_MOE_DISPATCH=fastest
    with pytest.raises(UsageError, match="LLADA_MOE_DISPATCH 'fastest' is not auto or one of"):
        tiny_moe.dispatch_for(x)


def test_grouped_layer_compiles_as_one_graph(tiny_moe, monkeypatch):
    """fullgraph=True fails on any graph break: a .tolist(), .item() or routing-dependent shape on the way,
    i.e. anything that would make a GPU wait for the host. bf16: the CPU kernel runs fp32 too, but the
    shape check that compile uses accepts bf16 only."""
    monkeypatch.setattr(llada2_moe, "MOE_DISPATCH", "grouped")
    moe = copy.deepcopy(tiny_moe).to(torch.bfloat16)
    x = torch.randn(2, 32, moe.cfg.hidden_size, dtype=torch.bfloat16)
    with torch.no_grad():
        compiled = torch.compile(moe, fullgraph=True, backend="eager")(x)
        assert torch.equal(compiled, moe(x))


def cuda_moe(moe: MoE) -> MoE:
    layer = copy.deepcopy(moe).to("cuda", torch.bfloat16)
    dims = (layer.cfg.hidden_size, layer.cfg.moe_intermediate_size)
    if not moe_dispatch.grouped_supported(torch.device("cuda"), torch.bfloat16, dims):
        pytest.skip("torch._grouped_mm has no sync-free kernel on this GPU (needs sm90/sm100)")
    return layer


@needs_cuda
def test_grouped_layer_captures_in_a_cuda_graph_and_replays_like_eager(tiny_moe, monkeypatch):
    monkeypatch.setattr(llada2_moe, "MOE_DISPATCH", "auto")
    monkeypatch.setattr(llada2_moe, "GPU_GROUPED", True)
    moe = cuda_moe(tiny_moe)
    static = torch.randn(2, 32, moe.cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert moe.dispatch_for(static.view(-1, static.shape[-1])) == "grouped"
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs asks
            moe(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = moe(static)
        for seed in (1, 2):  # new tokens, new routing, same graph
            static.copy_(torch.randn(static.shape, generator=torch.Generator().manual_seed(seed)))
            graph.replay()
            assert torch.equal(captured, moe(static))


@needs_cuda
def test_grouped_layer_compiles_with_inductor_on_cuda(tiny_moe, monkeypatch):
    monkeypatch.setattr(llada2_moe, "MOE_DISPATCH", "grouped")
    moe = cuda_moe(tiny_moe)
    x = torch.randn(2, 32, moe.cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        eager = moe(x)
        compiled = torch.compile(moe, fullgraph=True)(x)
    assert torch.allclose(compiled.float(), eager.float(), atol=2e-2, rtol=2e-2)
