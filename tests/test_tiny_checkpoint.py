"""The tiny checkpoint mirrors the real repo's layout, keys, dtypes and special tokens; every part loads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llada_cli.checkpoint.components import inspect_component, load_decoder, load_state, load_vae
from llada_cli.checkpoint.layout import COMPONENTS
from llada_cli.checkpoint.safetensors_io import read_headers
from llada_cli.weights import real_configs
from llada_cli.weights.tiny import build_tiny
from llada_cli.weights.tokenizer import SPECIAL_TOKENS

# The real repo's files (current names; see shared checkpoint facts), minus remote code we never run.
REAL_LAYOUT = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
    "image_tokenizer/config.json",
    "image_tokenizer/preprocessor_config.json",
    "image_tokenizer/model.safetensors",
    "image_tokenizer/sigvq_embedding.pt",
    "decoder/config.json",
    "decoder/model.safetensors",
    "decoder-turbo/config.json",
    "decoder-turbo/model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
}


def files_of(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_file_list_mirrors_the_real_repo(tiny_dir):
    files = files_of(tiny_dir)
    shards = {f for f in files if f.startswith("model-")}
    assert files - shards == REAL_LAYOUT
    assert shards == {f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)}
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == shards


def test_index_total_size_counts_every_tensor_byte(tiny_dir):
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    found = read_headers(sorted(tiny_dir.glob("model-*.safetensors")))
    sizes = {"BF16": 2, "F32": 4}
    import math

    total = sum(math.prod(t.shape) * sizes[t.dtype] for t in found.values())
    assert index["metadata"]["total_size"] == total
    assert set(index["weight_map"]) == set(found)


@pytest.mark.parametrize(
    "rel, real",
    [
        ("config.json", real_configs.BACKBONE),
        ("decoder-turbo/config.json", real_configs.DECODER_TURBO),
        ("decoder/config.json", real_configs.DECODER_TURBO),
        ("vae/config.json", real_configs.VAE),
        ("image_tokenizer/preprocessor_config.json", real_configs.PREPROCESSOR),
        ("generation_config.json", real_configs.GENERATION),
    ],
)
def test_config_files_carry_exactly_the_real_keys(tiny_dir, rel, real):
    tiny = json.loads((tiny_dir / rel).read_text())
    assert set(tiny) == set(real)


def test_image_tokenizer_config_has_the_real_nested_keys(tiny_dir):
    tiny = json.loads((tiny_dir / "image_tokenizer/config.json").read_text())
    assert set(tiny) == {"vision_config", "vq_config"}
    assert set(tiny["vision_config"]) == set(real_configs.IMAGE_TOKENIZER["vision_config"])
    assert set(tiny["vq_config"]) == set(real_configs.IMAGE_TOKENIZER["vq_config"])


def test_tokenizer_has_the_real_special_tokens_and_image_codes_after_the_text_vocab(tiny_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    cfg = json.loads((tiny_dir / "config.json").read_text())
    offset, vocab = cfg["image_token_offset"], cfg["vocab_size"]
    for s in SPECIAL_TOKENS + ("<|reserved_token_0|>", "<|reserved_token_128|>"):
        token_id = tok.token_to_id(s)
        assert token_id is not None and token_id < offset, s
        assert tok.encode(s, add_special_tokens=False).ids == [token_id]
    assert tok.token_to_id("<IMAGE0>") == offset
    assert tok.token_to_id(f"<IMAGE{vocab - offset - 1}>") == vocab - 1
    assert tok.get_vocab_size() == vocab
    assert cfg["pad_token_id"] == tok.token_to_id("<|endoftext|>")
    ids = tok.encode("<role>HUMAN</role>hello<|image|>", add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=True) == "HUMANhello"


def test_build_is_deterministic_and_seeded(tmp_path, tiny_dir):
    again = build_tiny(tmp_path / "again", "bf16", seed=0)
    other = build_tiny(tmp_path / "other", "bf16", seed=1)

    def digest(root: Path, rel: str) -> str:
        return hashlib.sha256((root / rel).read_bytes()).hexdigest()

    for rel in files_of(tiny_dir):
        assert digest(again, rel) == digest(tiny_dir, rel), rel
    assert digest(other, "model-00001-of-00003.safetensors") != digest(
        tiny_dir, "model-00001-of-00003.safetensors"
    )


def test_tiny_is_small(tiny_dir):
    assert sum((tiny_dir / f).stat().st_size for f in files_of(tiny_dir)) < 50 * 2**20


@pytest.mark.parametrize("component", list(COMPONENTS))
def test_every_component_passes_the_strict_check(tiny_dir, component):
    info = inspect_component(tiny_dir, component)
    assert info.files and info.bytes > 0


def test_backbone_image_tokenizer_and_sigvq_load_as_state_dicts(tiny_dir):
    import torch

    backbone = load_state(tiny_dir, "backbone", dtype=torch.float32)
    assert backbone["model.word_embeddings.weight"].shape == (1024, 64)
    assert backbone["model.layers.1.mlp.experts.63.down_proj.weight"].dtype == torch.float32
    image_tok = load_state(tiny_dir, "image_tokenizer")
    assert "model.vqmodel.post_quant_conv.weight" not in image_tok  # present on disk, never used
    assert image_tok["model.vqmodel.quantize.embedding.weight"].shape == (256, 16)
    sigvq = load_state(tiny_dir, "sigvq")
    assert sigvq["prior_token_embedding.weight"].shape == (256, 32)


def test_decoders_and_vae_load_into_diffusers_modules_and_run(tiny_dir):
    import torch

    for which in ("decoder", "decoder-turbo"):
        decoder = load_decoder(tiny_dir, which, dtype=torch.float32)
        assert not any(p.is_meta for p in decoder.parameters())
        assert decoder.cap_embedder[1].weight.shape == (64, 32)
    vae = load_vae(tiny_dir, dtype=torch.float32)
    with torch.no_grad():
        pixels = vae.decode(torch.zeros(1, 16, 4, 4)).sample
    assert pixels.shape == (1, 3, 32, 32) and torch.isfinite(pixels).all()


def test_fp8_variant_stores_experts_in_block_fp8_that_dequantise_to_the_bf16_weights(tiny_dir, tiny_fp8_dir):
    import torch

    cfg = json.loads((tiny_fp8_dir / "config.json").read_text())
    assert cfg["use_fp8_experts"] is True
    block = cfg["llada_fp8_experts"]["weight_block_size"]
    assert inspect_component(tiny_fp8_dir, "backbone").tensors > 0
    fp8 = load_state(tiny_fp8_dir, "backbone")
    bf16 = load_state(tiny_dir, "backbone")
    name = "model.layers.2.mlp.experts.5.gate_proj.weight"
    w, scale = fp8[name], fp8[name + "_scale_inv"]
    assert w.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    assert tuple(scale.shape) == (w.shape[0] // block[0], w.shape[1] // block[1])
    expanded = scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    deq = w.float() * expanded
    ref = bf16[name].float()
    # e4m3 rounding: half an ulp is 2**-4 relative for normals, 2**-10 * scale for subnormals
    bound = ref.abs() * 2**-4 + expanded * 2**-10
    assert ((deq - ref).abs() <= bound + 1e-12).all()
    assert not torch.equal(deq, ref)  # it really went through fp8
    assert fp8["model.layers.1.attention.dense.weight"].dtype == torch.bfloat16
    assert torch.equal(
        fp8["model.layers.1.attention.dense.weight"], bf16["model.layers.1.attention.dense.weight"]
    )
