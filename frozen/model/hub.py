"""Sharing exports through the Hugging Face Hub: resolve a repo id to an export folder, push one.

An export is small (``frozen_config.json``, ``model.safetensors`` with the trainable weights, the
``README.md`` model card): the LM it names is loaded from its own source, never uploaded.
``huggingface_hub`` does the transfer and the cache (``HF_HUB_CACHE``; offline with
``HF_HUB_OFFLINE=1``, when the snapshot must already be cached).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frozen.errors import FrozenConfigError

if TYPE_CHECKING:
    from frozen.model.frozen_model import FrozenModel

EXPORT_FILES = ("frozen_config.json", "model.safetensors", "README.md", "results.json")


def _not_found_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError

    return EntryNotFoundError, HFValidationError, RepositoryNotFoundError


def download_export(repo_id: str, *, revision: str | None = None) -> Path | None:
    """The local folder of hub repo ``repo_id`` when it holds a Frozen export, else None.

    Only ``frozen_config.json`` is fetched first, so an LM repo (``gpt2``, ...) is recognised as
    "not an export" without downloading its weights; then the export's few files are fetched (or
    taken from the cache). Not an id, not on the hub, or not cached while offline: None, and the
    caller treats the name as an LM.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    if Path(repo_id).expanduser().exists() or repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1:
        return None  # a filesystem path, not a repo id
    try:
        hf_hub_download(repo_id, EXPORT_FILES[0], revision=revision)
    except _not_found_errors():
        return None
    folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(EXPORT_FILES)))
    if not (folder / EXPORT_FILES[1]).is_file():
        raise FrozenConfigError(f"hub repo {repo_id} has {EXPORT_FILES[0]} but no {EXPORT_FILES[1]}; re-upload the "
                                "whole export (FrozenModel.push_to_hub)")
    return folder


def push_to_hub(model: "FrozenModel", repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload Frozen export", metadata: dict[str, Any] | None = None,
                results: str | Path | dict | None = None) -> Any:
    """Save ``model`` (weights, config, model card) to a temporary folder and upload it to ``repo_id``.

    Creates the repo when missing. Returns huggingface_hub's ``CommitInfo`` (``.commit_url``).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="frozen_push_") as tmp:
        model.save_pretrained(tmp, metadata={**(metadata or {}), "repo_id": repo_id}, results=results)
        if results is not None and not isinstance(results, dict) and Path(results).is_file():
            # The card's results table quotes this file: ship it so the numbers can be checked.
            (Path(tmp) / "results.json").write_bytes(Path(results).read_bytes())
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
