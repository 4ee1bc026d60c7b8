"""Exports on the Hugging Face Hub: find an export by folder, run directory or repo id; push one.

An export is small (the files :data:`frozen.model.export.EXPORT_FILES` names): the LM it names is
loaded from its own source, never uploaded. ``huggingface_hub`` does the transfer and the cache
(``HF_HUB_CACHE``; offline with ``HF_HUB_OFFLINE=1``, when the snapshot must already be cached).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Protocol

from frozen.errors import FrozenConfigError
from frozen.model.export import CONFIG_NAME, EXPORT_FILES, RESULTS_NAME, WEIGHTS_NAME, find_export
from frozen.model.lm import PACKAGED_GGUF, looks_like_path


class Exportable(Protocol):
    """What :func:`push_to_hub` uploads: a model that writes its export folder (``FrozenModel``)."""

    def save_pretrained(
        self, path: str | Path, *, metadata: dict[str, Any] | None = None, results: str | Path | dict | None = None
    ) -> Path: ...


def locate_export(name_or_path: str | Path) -> Path | None:
    """The local folder of the export ``name_or_path`` names: an export folder, a training run
    directory holding ``export/``, or a hub repo id of an export; None for anything else (an LM)."""
    found = find_export(name_or_path)
    if found is not None or isinstance(name_or_path, Path) or str(name_or_path) in PACKAGED_GGUF:
        return found
    return download_export(str(name_or_path))


def _not_found_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError

    return EntryNotFoundError, HFValidationError, RepositoryNotFoundError


def download_export(repo_id: str, *, revision: str | None = None) -> Path | None:
    """The local folder of hub repo ``repo_id`` when it holds a Frozen export, else None.

    Only ``frozen_config.json`` is fetched first, so an LM repo (``gpt2``, ...) is recognised as
    "not an export" without downloading its weights; then the export's few files are fetched (or
    taken from the cache). A path, not on the hub, or not cached while offline: None, and the
    caller treats the name as an LM.
    """
    # huggingface_hub at call time: loading a local export never pays for it
    from huggingface_hub import hf_hub_download, snapshot_download

    if looks_like_path(repo_id):
        return None
    try:
        hf_hub_download(repo_id, CONFIG_NAME, revision=revision)
    except _not_found_errors():
        return None
    folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(EXPORT_FILES)))
    if not (folder / WEIGHTS_NAME).is_file():
        raise FrozenConfigError(f"hub repo {repo_id} has {CONFIG_NAME} but no {WEIGHTS_NAME}; re-upload the "
                                "whole export (FrozenModel.push_to_hub)")
    return folder


def push_to_hub(model: Exportable, repo_id: str, *, private: bool | None = None, token: str | None = None,
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
            (Path(tmp) / RESULTS_NAME).write_bytes(Path(results).read_bytes())
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
