"""`--model` resolution: parsing, per-command download patterns, the HF cache, offline behaviour."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from llada_cli.checkpoint.layout import allow_patterns, components_for
from llada_cli.errors import IncompleteCheckpoint, ModelUnavailable, UsageError
from llada_cli.hub.resolve import parse_model_ref, resolve

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_snapshot(cache: Path, repo_id: str, src: Path, skip: tuple[str, ...] = ()) -> Path:
    """Lay `src` out exactly as huggingface_hub caches a snapshot: blobs, symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if not f.is_file() or rel.name.startswith(".") or str(rel).startswith(skip):
            continue
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snap / rel).parent), snap / rel)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


@pytest.mark.parametrize(
    "text, field, value",
    [
        ("tiny", "tiny", "bf16"),
        ("tiny-fp8", "tiny", "fp8"),
        ("inclusionAI/LLaDA2.0-Uni", "repo_id", "inclusionAI/LLaDA2.0-Uni"),
        ("inclusionAI/LLaDA2.0-Uni-FP8@abc123", "revision", "abc123"),
    ],
)
def test_parse_model_ref(text, field, value):
    assert getattr(parse_model_ref(text), field) == value


def test_parse_local_folder(tmp_path):
    assert parse_model_ref(str(tmp_path)).path == tmp_path.resolve()


@pytest.mark.parametrize("text", ["not a repo", "org/name@", "./does-not-exist", "a/b/c"])
def test_parse_rejects_nonsense(text):
    with pytest.raises(UsageError):
        parse_model_ref(text)


def test_chat_fetches_no_decoder_and_generate_fetches_one_decoder():
    chat = allow_patterns(components_for("chat"))
    assert not any(p.startswith(("decoder", "vae")) for p in chat)
    assert "image_tokenizer/*.safetensors" in chat and "image_tokenizer/sigvq_embedding.pt" not in chat
    turbo = allow_patterns(components_for("generate", "turbo"))
    assert any(p.startswith("decoder-turbo/") for p in turbo)
    assert not any(p.startswith("decoder/") for p in turbo)
    assert "image_tokenizer/*.safetensors" not in turbo  # text-to-image never runs the encoder
    normal = allow_patterns(components_for("generate", "normal"))
    assert any(p.startswith("decoder/") for p in normal) and not any(
        p.startswith("decoder-turbo/") for p in normal
    )
    for patterns in (chat, turbo, normal, allow_patterns(components_for("all"))):
        assert not any(p.endswith(".py") or p == "*" for p in patterns)


def test_download_passes_component_patterns_to_snapshot_download(monkeypatch, tiny_dir, tmp_path):
    import huggingface_hub

    calls = []

    def fake(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tiny_dir)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    root = resolve(parse_model_ref("inclusionAI/LLaDA2.0-Uni@v1"), components_for("generate", "normal"))
    assert root == tiny_dir
    repo_id, kwargs = calls[0]
    assert repo_id == "inclusionAI/LLaDA2.0-Uni" and kwargs["revision"] == "v1"
    assert kwargs["allow_patterns"] == allow_patterns(components_for("generate", "normal"))
    assert kwargs["local_files_only"] is False


def test_offline_model_not_in_cache_is_a_clear_error():
    with pytest.raises(ModelUnavailable) as err:
        resolve(parse_model_ref("inclusionAI/LLaDA2.0-Uni"), components_for("chat"))
    assert "not in the local cache" in err.value.message
    assert "llada download inclusionAI/LLaDA2.0-Uni" in err.value.hint


def test_offline_resolution_from_the_hf_cache(tiny_dir):
    cache = Path(os.environ["HF_HUB_CACHE"])
    snap = fake_hub_snapshot(cache, "inclusionAI/LLaDA2.0-Uni", tiny_dir, skip=("decoder-turbo",))
    ref = parse_model_ref("inclusionAI/LLaDA2.0-Uni")
    assert resolve(ref, components_for("generate", "normal")) == snap
    with pytest.raises(IncompleteCheckpoint, match="decoder-turbo/config.json"):
        resolve(ref, components_for("generate", "turbo"))


def test_tiny_is_built_once_and_reused():
    first = resolve(parse_model_ref("tiny"), components_for("all"))
    stamp = (first / "config.json").stat().st_mtime_ns
    again = resolve(parse_model_ref("tiny"), components_for("all"))
    assert again == first and (again / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".building-")]


def test_a_home_folder_that_cannot_be_expanded():
    with pytest.raises(UsageError, match="cannot expand"):
        parse_model_ref("~no-such-user-here/model")
