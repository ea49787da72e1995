"""Damaged copies of the tiny checkpoint are refused with a message that names the problem."""

from __future__ import annotations

import json

import pytest

from llada_cli.checkpoint.components import inspect_component, load_state
from llada_cli.checkpoint.layout import check_complete
from llada_cli.errors import CheckpointMismatch, ConfigError, CorruptFile, IncompleteCheckpoint

SHARD = "model-00002-of-00003.safetensors"


def rewrite_shard(path, change):
    """Load a shard, let `change` edit the dict of tensors, save it back."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def test_missing_shard(tiny_copy):
    (tiny_copy / SHARD).unlink()
    with pytest.raises(IncompleteCheckpoint, match=SHARD):
        check_complete(tiny_copy, ["backbone"])


def test_missing_config(tiny_copy):
    (tiny_copy / "vae" / "config.json").unlink()
    with pytest.raises(IncompleteCheckpoint, match="vae/config.json"):
        check_complete(tiny_copy, ["vae"])
    check_complete(tiny_copy, ["backbone", "tokenizer"])  # other components are unaffected


def test_missing_decoder_weights_name_the_file(tiny_copy):
    (tiny_copy / "decoder-turbo" / "model.safetensors").unlink()
    with pytest.raises(IncompleteCheckpoint, match="decoder-turbo/model.safetensors"):
        check_complete(tiny_copy, ["decoder-turbo"])


def test_old_decoder_file_name_is_accepted(tiny_copy):
    (tiny_copy / "decoder" / "model.safetensors").rename(tiny_copy / "decoder" / "decoder_model.safetensors")
    assert inspect_component(tiny_copy, "decoder").files[0].name == "decoder_model.safetensors"


def test_renamed_tensor(tiny_copy):
    def rename(t):
        key = next(k for k in t if k.endswith("dense.weight"))
        t[key.replace("dense", "dense_renamed")] = t.pop(key)

    rewrite_shard(tiny_copy / SHARD, rename)
    with pytest.raises(CheckpointMismatch) as err:
        load_state(tiny_copy, "backbone")
    assert "missing" in err.value.message and "dense_renamed" in err.value.message
    assert SHARD in err.value.message


def test_wrong_shape(tiny_copy):
    def squash(t):
        key = next(k for k in t if k.endswith("query_key_value.weight"))
        t[key] = t[key][:-1].clone()

    rewrite_shard(tiny_copy / SHARD, squash)
    with pytest.raises(
        CheckpointMismatch, match=r"query_key_value.weight .* has shape \[127, 64\], expected \[128, 64\]"
    ):
        load_state(tiny_copy, "backbone")


def test_wrong_dtype(tiny_copy):
    import torch

    def to_half(t):
        key = next(k for k in t if k.endswith("down_proj.weight"))
        t[key] = t[key].to(torch.float16)

    rewrite_shard(tiny_copy / SHARD, to_half)
    with pytest.raises(CheckpointMismatch, match="dtype F16, expected BF16"):
        load_state(tiny_copy, "backbone")


def test_truncated_safetensors(tiny_copy):
    path = tiny_copy / SHARD
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptFile, match=f"{SHARD} is truncated"):
        load_state(tiny_copy, "backbone")


def test_garbage_header(tiny_copy):
    (tiny_copy / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    )
    with pytest.raises(CorruptFile, match="unreadable safetensors header"):
        inspect_component(tiny_copy, "vae")


def test_tensor_stored_in_two_shards(tiny_copy):
    from safetensors.torch import load_file

    first = load_file(str(tiny_copy / "model-00001-of-00003.safetensors"))
    key = next(iter(first))
    rewrite_shard(tiny_copy / SHARD, lambda t: t.update({key: first[key]}))
    with pytest.raises(CorruptFile, match="stored in both"):
        inspect_component(tiny_copy, "backbone")


def test_config_missing_a_field(tiny_copy):
    path = tiny_copy / "config.json"
    cfg = json.loads(path.read_text())
    del cfg["hidden_size"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="hidden_size"):
        inspect_component(tiny_copy, "backbone")


def test_config_that_is_not_json(tiny_copy):
    (tiny_copy / "decoder" / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        inspect_component(tiny_copy, "decoder")


def test_truncated_sigvq_file(tiny_copy):
    path = tiny_copy / "image_tokenizer" / "sigvq_embedding.pt"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFile, match="sigvq_embedding.pt"):
        load_state(tiny_copy, "sigvq")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))


def test_sigvq_file_with_code_is_never_executed(tiny_copy, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    torch.save(
        {"prior_token_embedding.weight": _Exploit()},
        tiny_copy / "image_tokenizer" / "sigvq_embedding.pt",
        pickle_protocol=2,
    )
    with pytest.raises(CorruptFile):
        load_state(tiny_copy, "sigvq")
    assert not (tmp_path / "EXPLOITED").exists()


def test_index_pointing_to_a_missing_shard(tiny_copy):
    index = json.loads((tiny_copy / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors"
    (tiny_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(IncompleteCheckpoint, match="model-00009-of-00009.safetensors"):
        check_complete(tiny_copy, ["backbone"])


def test_tokenizer_missing_a_required_special_token(tiny_copy):
    path = tiny_copy / "tokenizer.json"
    data = json.loads(path.read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<boi>"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="lacks the special token <boi>"):
        inspect_component(tiny_copy, "tokenizer")


def test_tokenizer_whose_image_codes_disagree_with_the_config(tiny_copy):
    path = tiny_copy / "config.json"
    cfg = json.loads(path.read_text())
    cfg["image_token_offset"] -= 1
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="image_token_offset"):
        inspect_component(tiny_copy, "tokenizer")


def test_tokenizer_that_is_not_a_tokenizer(tiny_copy):
    (tiny_copy / "tokenizer.json").write_text("[1, 2, 3]")
    with pytest.raises(CorruptFile, match="cannot be read as a tokenizer"):
        inspect_component(tiny_copy, "tokenizer")
