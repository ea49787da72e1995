"""Executing a memory plan: experts kept in host RAM, layers placed per device, a streamed decoder."""

from __future__ import annotations

import pytest
import torch

from llada_cli.checkpoint.components import load_backbone
from llada_cli.runtime.placement import HostExperts, compute_devices, tensor_device


def test_each_tensor_goes_where_the_plan_puts_its_layer():
    plan = ["cuda:0", "cpu", "cuda:1"]
    assert compute_devices(plan, "cuda:0") == ["cuda:0", "cuda:0", "cuda:1"]
    assert tensor_device("model.word_embeddings.weight", plan, "cuda:0") == "cuda:0"
    assert tensor_device("model.layers.1.mlp.gate_proj", plan, "cuda:0") == "cpu"  # host experts
    assert tensor_device("model.layers.1.mlp.shared_experts.up_proj.weight", plan, "cuda:0") == "cuda:0"
    assert tensor_device("model.layers.1.attention.dense.weight", plan, "cuda:0") == "cuda:0"
    assert tensor_device("model.layers.2.mlp.down_proj", plan, "cuda:0") == "cuda:1"
    assert tensor_device("model.norm.weight", plan, "cuda:0") == "cuda:1"
    assert tensor_device("lm_head.weight", plan, "cuda:0") == "cuda:1"


@pytest.mark.parametrize("quant", ["none", "nf4"])
def test_experts_kept_in_host_ram_give_the_same_logits(tiny_dir, quant):
    resident = load_backbone(tiny_dir, dtype=torch.float32, quant=quant)
    hosted = load_backbone(tiny_dir, dtype=torch.float32, quant=quant, layer_devices=["cpu", "cpu", "cpu"])
    moe = hosted.model.layers[2].mlp
    assert isinstance(moe.gate_proj, HostExperts) and isinstance(
        hosted.model.layers[1].mlp.up_proj, HostExperts
    )
    ids, pos = torch.randint(0, 700, (2, 40)), torch.arange(40)[None].expand(2, -1)
    assert torch.equal(hosted(ids, pos), resident(ids, pos))
    cache_a, cache_b = resident.make_cache(2, 64), hosted.make_cache(2, 64)
    resident(ids[:, :32], pos[:, :32], None, cache_a, commit=True)
    hosted(ids[:, :32], pos[:, :32], None, cache_b, commit=True)
    a = resident(ids[:, 32:], pos[:, 32:], None, cache_a)
    assert torch.equal(hosted(ids[:, 32:], pos[:, 32:], None, cache_b), a)


def test_host_experts_send_only_the_indexed_experts():
    stack = HostExperts(torch.arange(24.0).view(4, 2, 3), "cpu")
    assert torch.equal(stack[torch.tensor([3, 1])], torch.arange(24.0).view(4, 2, 3)[[3, 1]])
    assert torch.equal(stack[2], torch.arange(12.0, 18.0).view(2, 3))


def test_streamed_decoder_matches_the_resident_one(tiny_dir):
    from llada_cli.pipelines.decode import DecoderStack

    resident = DecoderStack.load(tiny_dir, "turbo", "cpu", torch.float32)
    streamed = DecoderStack.load(tiny_dir, "turbo", "cpu", torch.float32, offload=True)
    assert hasattr(streamed.decoder, "_hf_hook")  # accelerate moves each block's weights in turn
    codes = [i % 200 for i in range(64)]
    a, _ = resident.decode(codes, 8, 8, seed=1)
    b, _ = streamed.decode(codes, 8, 8, seed=1)
    assert a.tobytes() == b.tobytes()


def test_streamed_quantized_decoder_matches_the_resident_one(tiny_dir):
    """Packed decoder weights are buffers: they must stream with the hooks like parameters do."""
    from llada_cli.pipelines.decode import DecoderStack

    resident = DecoderStack.load(tiny_dir, "turbo", "cpu", torch.float32, quant="nf4")
    streamed = DecoderStack.load(tiny_dir, "turbo", "cpu", torch.float32, quant="nf4", offload=True)
    packed = streamed.decoder.layers[0].attention.to_q.packed
    assert packed._hf_hook.offload and packed.q.device.type == "meta"  # held by the hook, not the module
    codes = [i % 200 for i in range(64)]
    assert (
        resident.decode(codes, 8, 8, seed=1)[0].tobytes() == streamed.decode(codes, 8, 8, seed=1)[0].tobytes()
    )
