"""``make compare``: runs side by side. Reads what training and evaluation leave in a run folder, lines up
the same cells (task, condition, setting, metric) across runs, finds the config values that vary and checks
that each task was measured with the same protocol. The report (compare.md, compare.png) is
:mod:`frozen.eval.compare_report`.

A run folder holds ``results.json`` (evaluate.py) and/or ``validation.json`` (train.py's last validation
pass) and usually Hydra's ``.hydra/config.yaml``; a Hydra multirun folder (``multirun.yaml`` + numbered job
folders) stands for its jobs. An evaluation run's config is its own (keys ``eval:...``) plus the training
config of the model it loaded (its run's ``.hydra/config.yaml``, else the export's ``frozen_config.json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from frozen.core.results import RESULTS_NAME, Row, setting_label
from frozen.errors import InputError
from frozen.eval.protocol import protocols
from frozen.eval.stats import is_proportion, wilson_interval
from frozen.model.export import CONFIG_NAME

VALIDATION_NAME = "validation.json"  # written by frozen.train.validate (eval may not import train)
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
HYDRA_RUNTIME = Path(".hydra") / "hydra.yaml"  # its runtime.choices: the preset chosen in each config group
LAST_VALIDATION = "last validation"  # the setting label of a training run's validation row
# Config keys that never explain a difference between results: paths, logging, workers, hardware.
NOISE = ("run_dir", "load_path", "data_root", "data.data_root", "num_gpus", "num_nodes", "per_gpu_batchsize",
         "name", "device", "batch_size", "logger.", "trainer.device", "trainer.log_every", "trainer.ckpt_every",
         "trainer.keep_last", "trainer.threads", "trainer.num_sample_captions", "data.num_workers",
         "data.prefetch_factor", "eval:", "tasks", "max_examples")
EVAL_KEYS = ("seed", "precision", "blind_model_sees_black_images")  # an evaluation's own config columns
FIRST = ("lm", "lm.name", "lm_num_parameters", "model.num_prefix_tokens", "seed", "trainer.lr")  # column order
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)  # t quantiles, 1..10 dof
CellKey = tuple[str, str, str, str]  # (task, condition, setting, metric)


@dataclass
class Run:
    """One run: its label in the tables, folder, flattened config, result rows and protocol per task."""

    label: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    protocol: dict[str, dict[str, Any]] = field(default_factory=dict)

    def cells(self) -> dict[CellKey, Row]:
        return {cell_key(row): row for row in self.rows}


def cell_key(row: Row) -> CellKey:
    setting = LAST_VALIDATION if row["task"] == "validation" else setting_label(row)
    return (row["task"], str(row.get("condition", "image")), setting, row["metric"])


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1e-4}}`` -> ``{"trainer.lr": 1e-4}`` (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}; rerun the run that writes it or leave the folder out") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise InputError(f"{path} has no \"rows\" list: not a results file of this project; leave the folder out")
    return data


def training_config(folder: Path) -> dict[str, Any] | None:
    """The flattened training config saved by Hydra in ``folder`` (None when there is none, or when the
    saved config is an evaluation's: it has no ``trainer``)."""
    path = folder / HYDRA_CONFIG
    if not path.is_file():
        return None
    saved = yaml.safe_load(path.read_text()) or {}
    if not (isinstance(saved, dict) and "trainer" in saved):
        return None
    choices: dict[str, Any] = {}  # the preset of each config group (lm: smollm2_135m_offline, experiment: ...)
    if (folder / HYDRA_RUNTIME).is_file():
        hydra = yaml.safe_load((folder / HYDRA_RUNTIME).read_text()) or {}
        found = hydra.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}
        choices = {k: v for k, v in found.items() if not k.startswith("hydra/") and k != "logger"}
    return choices | flatten(saved)


def model_config(load_path: str | None, checkpoint: str | None) -> dict[str, Any]:
    """The config of the model an evaluation loaded: its training run's, else its export's model + lm."""
    for where in (load_path, checkpoint):
        if not where:
            continue
        folder = Path(where)
        for candidate in (folder, folder.parent):
            found = training_config(candidate)
            if found is not None:
                return found
        for export in (folder, folder / "export"):
            if (export / CONFIG_NAME).is_file():
                saved = json.loads((export / CONFIG_NAME).read_text())
                return flatten({k: saved[k] for k in ("model", "lm") if isinstance(saved.get(k), dict)})
    return {}


def load_run(folder: Path, label: str) -> Run:
    """The run in ``folder``: rows of its results.json and validation.json, config and protocols."""
    results, validation = folder / RESULTS_NAME, folder / VALIDATION_NAME
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; pass run folders (outputs/...) or Hydra multirun folders")
    if not results.is_file() and not validation.is_file():
        if (folder / HYDRA_CONFIG).is_file():
            raise InputError(f"{folder} is a run without results (no {RESULTS_NAME}, no {VALIDATION_NAME}): evaluate "
                             f"it (evaluate.py load_path={folder}) or train with data.val_shards and trainer.val_every")
        raise InputError(f"{folder} is not a run: it has no {RESULTS_NAME}, {VALIDATION_NAME} or {HYDRA_CONFIG}; pass "
                         "a training or evaluation run folder or a Hydra multirun folder (multirun/NAME/DATE_TIME)")
    run = Run(label=label, path=folder, config=training_config(folder) or {})
    if validation.is_file():
        data = read_json(validation)
        run.rows += data["rows"]
        run.protocol |= data.get("protocol", {})
        run.config["lm_num_parameters"] = data.get("lm_num_parameters")
    if results.is_file():
        data = read_json(results)
        config = data.get("config") or {}
        models = sorted({str(row["model"]) for row in data["rows"] if "model" in row})
        if len(models) > 1:
            example = folder / "eval" / models[0]
            raise InputError(f"{results} holds the rows of {len(models)} models ({', '.join(models)}: make demo's "
                             f"summary); pass each model's evaluation folder instead, e.g. {example}")
        run.rows += data["rows"]
        run.protocol |= data.get("protocol") or protocols(config, recorded=False)  # older files
        run.config = model_config(config.get("load_path"), data.get("checkpoint")) | run.config
        run.config |= {f"eval:{key}": config[key] for key in EVAL_KEYS if key in config}
        if data.get("lm_num_parameters") is not None:
            run.config["lm_num_parameters"] = data["lm_num_parameters"]
    if run.config.get("lm_num_parameters") is None:
        run.config.pop("lm_num_parameters", None)
    return run


def job_folders(multirun: Path) -> list[Path]:
    """A Hydra multirun folder's job folders (``0_...``, ``1_...``) in job order."""
    jobs = [p for p in multirun.iterdir() if p.is_dir() and p.name.split("_")[0].isdigit()]
    if not jobs:
        raise InputError(f"{multirun} has multirun.yaml but no job folders (0_..., 1_...): the sweep did not start "
                         "its jobs; run it again")
    return sorted(jobs, key=lambda p: int(p.name.split("_")[0]))


def load_runs(folders: Sequence[str | Path]) -> list[Run]:
    """Every run named by ``folders`` (a multirun folder counts as its jobs), labelled for the tables:
    the folder name, a multirun job by its number (prefixed by its sweep's folder when two sweeps are given)."""
    if not folders:
        raise InputError('no runs to compare: make compare RUNS="outputs/run_a outputs/run_b" (or a multirun folder)')
    found: list[tuple[Path, Path, str]] = []  # (run folder, folder given, short label)
    for given in map(Path, folders):
        if (given / "multirun.yaml").is_file():
            found += [(job, given, f"#{job.name.split('_')[0]}") for job in job_folders(given)]
        else:
            found.append((given, given, given.name or str(given)))
    shorts = [short for _, _, short in found]
    labels = [short if shorts.count(short) == 1 else _distinct(given, [g for _, g, s in found if s == short], short)
              for _, given, short in found]
    labels = [label if labels.count(label) == 1 else f"{label}({i + 1})" for i, label in enumerate(labels)]
    return [load_run(folder, label) for (folder, _, _), label in zip(found, labels)]


def _distinct(given: Path, alike: list[Path], short: str) -> str:
    """``short`` prefixed by the first part of ``given``'s path that tells it from the others of ``alike``:
    ``after/…/frozen`` for /work/after/outputs/demo/eval/frozen beside /work/base/outputs/demo/eval/frozen,
    ``A#0`` for job 0 of multirun folder .../A beside .../B."""
    parts = given.resolve().parts
    others = [p.resolve().parts for p in alike if p.resolve() != given.resolve()]
    for i, part in enumerate(parts):
        if any(i >= len(o) or o[i] != part for o in others):
            between = len(parts) - i - (1 if short.startswith("#") else 2)  # parts between it and the label
            return part + ("/…" if between > 0 else "") + ("" if short.startswith("#") else "/") + short
    return short


def is_noise(key: str) -> bool:
    return any(key == n or (n.endswith((".", ":")) and key.startswith(n)) for n in NOISE) and \
        not key.startswith(tuple(f"eval:{k}" for k in EVAL_KEYS))


def varying(runs: Sequence[Run]) -> list[str]:
    """Config keys with two different values among the runs that record them (noise such as paths left out), in
    :data:`FIRST` order, then in order of appearance."""
    keys = list(dict.fromkeys(k for run in runs for k in run.config))
    out = [k for k in keys if not is_noise(k)  # a run without the key (an older run's config) does not count
           and len({json.dumps(run.config[k], sort_keys=True, default=str) for run in runs if k in run.config}) > 1]
    return sorted(out, key=lambda k: (FIRST.index(k) if k in FIRST else len(FIRST), out.index(k)))


def interval(row: Row | None) -> tuple[float, float] | None:
    """A cell's 95% interval: the row's own ``ci95``; a t interval over validation batches (``batch_losses``);
    Wilson on ``num_examples`` for accuracy-like metrics; None otherwise (CIDEr, BLEU, perplexity)."""
    if row is None or row.get("mean") is None:
        return None
    if row.get("ci95"):
        return float(row["ci95"][0]), float(row["ci95"][1])
    batches = row.get("batch_losses") or []
    if len(batches) > 1:
        mean = sum(batches) / len(batches)
        sd = math.sqrt(sum((b - mean) ** 2 for b in batches) / (len(batches) - 1))
        dof = len(batches) - 1
        half = (T975[dof - 1] if dof <= len(T975) else 1.96 + 2.4 / dof) * sd / math.sqrt(len(batches))
        return row["mean"] - half, row["mean"] + half
    if is_proportion(row["metric"]) and 0.0 <= row["mean"] <= 1.0 and row.get("num_examples"):
        return wilson_interval(float(row["mean"]), int(row["num_examples"]))
    return None
