"""Manifests built from the REAL configs reproduce the real checkpoints' tensor counts and sizes."""

from __future__ import annotations

import json
import re

import pytest

from llada_cli.errors import ConfigError
from llada_cli.models.llada2_moe import BackboneConfig, backbone_manifest
from llada_cli.models.siglip_vq import ImageTokenizerConfig, image_tokenizer_manifest
from llada_cli.models.sigvq import SigVQConfig, sigvq_manifest
from llada_cli.models.tensors import param_count
from llada_cli.models.vae import vae_manifest
from llada_cli.models.zimage import DecoderConfig, decoder_manifest, to_diffusers_name
from llada_cli.weights import real_configs

from .conftest import FIXTURES


def real(name: str) -> dict:
    return json.loads((FIXTURES / "real" / name).read_text())


def test_recorded_real_configs_equal_the_recovered_files():
    assert real_configs.BACKBONE == real("backbone_config.json")
    assert real_configs.DECODER_TURBO == real("decoder_turbo_config.json")
    assert real_configs.PREPROCESSOR == real("preprocessor_config.json")


def test_real_backbone_manifest_has_the_real_size():
    m = backbone_manifest(BackboneConfig.from_dict(real("backbone_config.json")))
    assert param_count(m) == 16_322_752_256
    assert len(m) == 14_813
    assert m["model.layers.0.attention.query_key_value.weight"].shape == (3072, 2048)
    assert m["model.layers.0.mlp.gate_proj.weight"].shape == (5120, 2048)
    assert m["model.layers.19.mlp.experts.255.down_proj.weight"].shape == (2048, 512)
    assert m["model.layers.1.mlp.gate.expert_bias"].dtypes[0] == "F32"
    assert m["lm_head.weight"].shape == (173568, 2048)
    assert not any(k.endswith(".bias") for k in m)
    assert "model.layers.0.mlp.gate.weight" not in m  # layer 0 is dense
    experts = [k for k in m if re.search(r"\.experts\.\d+\.", k)]
    assert len(experts) == 19 * 256 * 3
    assert sum(m[k].numel for k in experts) == 15_300_820_992


def test_real_fp8_manifest_stores_experts_as_block_fp8():
    cfg = BackboneConfig.from_dict({**real("backbone_config.json"), "use_fp8_experts": True})
    m = backbone_manifest(cfg)
    assert cfg.fp8_block == (128, 128)
    assert m["model.layers.1.mlp.experts.0.gate_proj.weight"].dtypes == ("F8_E4M3",)
    assert m["model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv"].shape == (4, 16)
    assert m["model.layers.1.mlp.experts.0.up_proj.weight_scale_inv"].shape == (4, 16)
    assert m["model.layers.1.mlp.experts.0.down_proj.weight_scale_inv"].shape == (16, 4)
    assert m["model.layers.1.mlp.shared_experts.gate_proj.weight"].dtypes == ("BF16",)
    assert m["model.layers.1.attention.dense.weight"].dtypes == ("BF16",)


def test_stacked_expert_layout_is_recognised_by_model_type():
    cfg = BackboneConfig.from_dict({**real("backbone_config.json"), "model_type": "llada2_moe_veomni"})
    m = backbone_manifest(cfg)
    assert m["model.layers.1.mlp.experts.gate_proj"].shape == (256, 512, 2048)
    assert m["model.layers.1.mlp.experts.down_proj"].shape == (256, 2048, 512)
    assert param_count(m) == 16_322_752_256


def test_backbone_config_defaults_and_derived_fields():
    cfg = BackboneConfig.from_dict(real("backbone_config.json"))
    assert cfg.rotary_dim == 64
    assert cfg.image_vocab_size == 16384
    assert cfg.expert_layout == "per_expert"
    assert (cfg.score_function, cfg.norm_topk_prob, cfg.moe_router_enable_expert_bias) == (
        "sigmoid",
        True,
        True,
    )


def test_config_missing_a_field_names_it():
    raw = real("backbone_config.json")
    del raw["num_experts"]
    with pytest.raises(ConfigError, match="num_experts"):
        BackboneConfig.from_dict(raw)


def test_real_image_tokenizer_manifest_matches_the_published_count():
    m = image_tokenizer_manifest(ImageTokenizerConfig.from_dict(real_configs.IMAGE_TOKENIZER))
    assert len(m) == 488
    assert param_count(m) == 1_199_457_280
    assert m["model.visual.embeddings.position_embedding.weight"].shape == (16384, 1536)


def test_real_sigvq_manifest():
    m = sigvq_manifest(SigVQConfig(16384, 4096))
    assert len(m) == 5 and param_count(m) == 100_671_488


def test_real_decoder_manifest_equals_diffusers_module():
    import torch
    from diffusers import ZImageTransformer2DModel

    cfg = DecoderConfig.from_dict(real("decoder_turbo_config.json"))
    m = decoder_manifest(cfg)
    assert len(m) == 521
    assert param_count(m) == 6_160_808_512
    with torch.device("meta"):
        module = ZImageTransformer2DModel(**cfg.diffusers_kwargs(4096))
    theirs = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert theirs == {to_diffusers_name(k): spec.shape for k, spec in m.items()}


def test_real_vae_manifest():
    m = vae_manifest(real_configs.VAE)
    assert len(m) == 244
    assert param_count(m) == 83_819_683
    decoder_half = {k: v for k, v in m.items() if k.startswith("decoder.")}
    assert len(decoder_half) == 138 and param_count(decoder_half) == 49_545_475
