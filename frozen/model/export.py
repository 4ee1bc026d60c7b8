"""The export format: the files of a Frozen export, how they are written and read, and where one is found.

An export is a folder holding ``frozen_config.json`` (format marker, ``ModelConfig``, ``LMConfig`` and
metadata keys), ``model.safetensors`` (the trainable weights only: never the frozen LM, never a
pickle) and the model card ``README.md``; a ``results.json`` may travel with it. A training run
directory holds its export in ``export/``. :class:`TrainingFacts` is what the training loop hands
over about the run that wrote an export.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from frozen.config import LMConfig, ModelConfig
from frozen.core.files import atomic_write
from frozen.core.results import RESULTS_NAME
from frozen.errors import FrozenConfigError, write_error

CONFIG_NAME = "frozen_config.json"  # not config.json: a Frozen export must not look like an HF LM folder
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
EXPORT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, RESULTS_NAME)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainingFacts:
    """How an export was trained, as ``train()`` knows it; the model card shows these facts.

    ``trained_blind`` is also stored in ``frozen_config.json``: evaluation reads it back to feed
    black images to a train-blind model.
    """

    steps: int
    training_data: str | None = None
    batch_size: int | None = None
    init_from: str | None = None
    trained_blind: bool = False

    def config_entries(self) -> dict[str, Any]:
        """The keys stored in ``frozen_config.json``."""
        return {"trained_blind": self.trained_blind}

    def card_metadata(self) -> dict[str, Any]:
        """The model card's metadata keys (see :data:`frozen.model.card.METADATA_KEYS`); unknown facts left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def export_config(model_cfg: ModelConfig, lm_cfg: LMConfig, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contents of ``frozen_config.json``: format marker, both configs, then the metadata keys."""
    return {
        "format": "frozen",
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(model_cfg),
        "lm": dataclasses.asdict(lm_cfg),
        **(metadata or {}),
    }


def write_export(path: Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``state`` (contiguous CPU tensors) to ``model.safetensors`` and ``config`` to ``frozen_config.json``,
    each atomically (:func:`frozen.core.files.atomic_write`): a full disk leaves an earlier export as it was and
    raises a one-line :class:`frozen.errors.WriteError`."""
    path.mkdir(parents=True, exist_ok=True)
    for name, write in ((WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"})),
                        (CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))):
        try:
            atomic_write(path / name, write)
        except (SafetensorError, OSError) as err:  # safetensors: "I/O error: File too large (os error 27)"
            raise write_error(path / name, err) or err


def read_config(path: Path) -> dict[str, Any]:
    """The ``frozen_config.json`` of export folder ``path``; an error when it is not a Frozen export."""
    saved = json.loads((path / CONFIG_NAME).read_text())
    if saved.get("format") != "frozen":
        raise FrozenConfigError(f"{path / CONFIG_NAME} is not a Frozen export (format={saved.get('format')!r})")
    return saved


def read_configs(path: Path) -> tuple[ModelConfig, LMConfig]:
    """The ``ModelConfig`` and ``LMConfig`` export folder ``path`` was saved with."""
    saved = read_config(path)
    return ModelConfig(**saved["model"]), LMConfig(**saved["lm"])


def read_weights(weights: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors`` written by :func:`write_export`; a damaged file is one line."""
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as err:  # truncated or overwritten: a copy cut short, a full disk
        raise FrozenConfigError(f"{weights} is not a readable safetensors file ({err}); the export is damaged "
                                "(a copy cut short, a full disk?): copy or save it again") from None


def find_export(path: str | Path) -> Path | None:
    """``path`` if it is an export, ``path/export`` if it is a training run directory holding one, else None
    (e.g. an LM hub id)."""
    path = Path(str(path)).expanduser()
    for candidate in (path, path / "export"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def resolve_export(load_path: str | None) -> Path:
    """An export, or a training run directory holding ``export/``; an error otherwise."""
    if not load_path:
        raise FrozenConfigError("set load_path= to a trained export (a run directory or its export/ folder)")
    export = find_export(load_path)
    if export is not None:
        return export
    raise FrozenConfigError(
        f"{load_path} holds no {CONFIG_NAME}; give a save_pretrained export or a run directory with export/"
    )
