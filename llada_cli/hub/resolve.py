"""Turn `--model` into a local folder that holds every component a command needs.

`--model` takes a Hub repo id (optionally `repo@revision`), a local directory, or `tiny` / `tiny-fp8` (the
random-weight checkpoints built by `llada_cli.weights`). Hub downloads go through `snapshot_download`
into the standard HF cache, with `allow_patterns` per component; HF_HUB_OFFLINE, HF_HOME and HF_TOKEN
behave as in every HF tool. After resolution every needed component is checked for completeness.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint.layout import allow_patterns, check_complete
from ..errors import ModelUnavailable, UsageError
from ..paths import hf_hub_cache, hf_offline, tiny_root

TINY_NAMES = {"tiny": "bf16", "tiny-fp8": "fp8"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$")


@dataclass(frozen=True)
class ModelRef:
    """What `--model` named: exactly one of tiny variant, local path or Hub repo."""

    text: str
    tiny: str | None = None
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @property
    def label(self) -> str:
        if self.repo_id:
            return self.repo_id + (f"@{self.revision}" if self.revision else "")
        return self.text


def parse_model_ref(text: str) -> ModelRef:
    text = text.strip()
    if not text:
        raise UsageError("--model is empty", "pass a Hub repo id, a folder, or `tiny`")
    if text in TINY_NAMES:
        return ModelRef(text, tiny=TINY_NAMES[text])
    try:
        expanded = Path(text).expanduser()
    except RuntimeError:  # "~someone" for a user this machine does not know
        raise UsageError(f"--model {text!r}: cannot expand the home folder in it") from None
    if text.startswith((".", "/", "~")) or expanded.is_dir():
        if not expanded.is_dir():
            raise UsageError(f"model folder {text} does not exist", "pass a Hub repo id, a folder, or `tiny`")
        return ModelRef(text, path=expanded.resolve())
    repo, at, revision = text.partition("@")
    if not _REPO_ID.match(repo) or (at and not revision):
        raise UsageError(
            f"--model {text!r} is neither a folder nor a Hub repo id",
            "use e.g. inclusionAI/LLaDA2.0-Uni, inclusionAI/LLaDA2.0-Uni@<revision>, ./my-folder or tiny",
        )
    if revision and (not _REVISION.match(revision) or ".." in revision):
        raise UsageError(f"revision {revision!r} is not a valid branch, tag or commit")
    return ModelRef(text, repo_id=repo, revision=revision or None)


def _snapshot(ref: ModelRef, components: tuple[str, ...], local_only: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            snapshot_download(
                ref.repo_id,
                revision=ref.revision,
                cache_dir=hf_hub_cache(),
                allow_patterns=allow_patterns(components),
                local_files_only=local_only,
                token=os.environ.get("HF_TOKEN") or None,
            )
        )
    except LocalEntryNotFoundError:
        why = "offline (HF_HUB_OFFLINE)" if local_only or hf_offline() else "the Hub could not be reached"
        raise ModelUnavailable(
            f"{ref.label} is not in the local cache and {why}",
            f"run `llada download {ref.label}` on a machine with network, or pass a local folder",
        ) from None
    except GatedRepoError:
        raise ModelUnavailable(
            f"{ref.label} is gated", "accept its terms on the Hub and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise ModelUnavailable(
            f"repo {ref.repo_id} was not found", "check the name, or set HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise ModelUnavailable(f"revision {ref.revision} of {ref.repo_id} was not found") from None
    except HfHubHTTPError as exc:
        raise ModelUnavailable(
            f"download of {ref.label} failed: {exc}", "retry, or check your network"
        ) from None


def resolve(ref: ModelRef, components: tuple[str, ...], *, download: bool = True) -> Path:
    """Local folder holding `components`, fetched if needed and allowed; checked for completeness."""
    if ref.tiny:
        from ..weights.tiny import ensure_tiny

        root = ensure_tiny(tiny_root(), ref.tiny)
    elif ref.path:
        root = ref.path
    else:
        root = _snapshot(ref, components, local_only=not download or hf_offline())
    check_complete(root, components)
    return root
