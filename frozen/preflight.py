"""Cheap checks of a whole run before anything heavy is built: every problem at once, one line each.

``train.py`` and ``evaluate.py`` call :func:`check_train` / :func:`check_evaluate` on the composed
Hydra config first. They look at config values (the schemas' own ``check`` functions), shard patterns,
``load_path`` / ``init_from``, whether the LM resolves offline, and the evaluation data of every
selected task; nothing is loaded (no LM, no tokenizer, no backbone). The problems are collected in a
:class:`Problems` and raised together as one :class:`PreflightError`; :mod:`frozen.cli` prints them,
one line each, and exits with code 2. Other scripts (``scripts/make_shards.py``) can reuse
:class:`Problems` for their own checks.
"""

from __future__ import annotations

import json
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from frozen.config import evaluate_config_problems, prefix_in_rows, train_config_problems
from frozen.data.shards import resolve_shards
from frozen.errors import FrozenConfigError, FrozenError


class PreflightError(FrozenConfigError):
    """Several problems found before a run; ``str()`` is one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Problems:
    """Collects one-line problems; :meth:`raise_if_any` raises them all together."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str, key: str | None = None) -> None:
        """Record a problem; ``key`` (a config key or path) is put in front when the line lacks it."""
        line = " ".join(str(line).split())  # one line, whatever the source message looked like
        self.lines.append(f"{key}: {line}" if key and not line.startswith(key) else line)

    def extend(self, lines: list[str]) -> None:
        for line in lines:
            self.add(line)

    def run(self, key: str | None, check, *args, **kwargs) -> Any:
        """Call ``check``; a :class:`FrozenError` it raises becomes a problem about ``key`` (returns None)."""
        try:
            return check(*args, **kwargs)
        except FrozenError as err:
            for line in str(err).splitlines() or [type(err).__name__]:
                self.add(line, key)
            return None

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self):
        return iter(self.lines)

    def raise_if_any(self) -> None:
        if self.lines:
            raise PreflightError(self.lines)


# ---------------------------------------------------------------------------------------------- pieces
def _missing_values(cfg: DictConfig, problems: Problems) -> bool:
    """``???`` values and interpolations that do not resolve; True if any (the value checks then wait)."""
    for key in sorted(OmegaConf.missing_keys(cfg)):
        problems.add(f"{key} is not set; give it on the command line ({key}=...) or in the preset")
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        problems.add(f"cannot resolve {key or 'a value'}: {str(err).splitlines()[0]}")
        return True
    return len(problems) > 0


def check_shards(problems: Problems, key: str, spec: Any, data_root: str) -> None:
    """The shard pattern ``spec`` (relative to ``data_root``) names existing, non-empty files."""
    problems.run(f"{key}={spec}", resolve_shards, spec if isinstance(spec, str) else list(spec), data_root)


def check_lm(problems: Problems, key: str, name: str, packing: bool | str = False) -> None:
    """The LM resolves without the network where ``HF_HUB_OFFLINE=1`` (a path-like name: the folder exists);
    with ``packing``, its config says it can keep packed captions apart (read from config.json, no weights);
    a string names the data option with prefix slots inside rows that asks (frozen.data.interleave)."""
    from frozen.model.lm import lm_packing_problem, lm_problem

    setting = packing if isinstance(packing, str) else "data.packing=true"
    problem = lm_problem(name) or (lm_packing_problem(name, setting) if packing else None)
    if problem:
        problems.add(problem, key)


def check_vision(problems: Problems, name: str) -> None:
    from frozen.model.vision import vision_problem

    problem = vision_problem(name)
    if problem:
        problems.add(problem, "model.vision")


def _export_config(problems: Problems, load_path: str) -> dict[str, Any] | None:
    """The ``frozen_config.json`` of an export (or of a run directory's ``export/``), else a problem."""
    from frozen.model.export import CONFIG_NAME, find_export

    if not os.path.exists(os.path.expanduser(load_path)):
        problems.add(f"load_path={load_path} does not exist; give a trained export or run directory")
        return None
    export = find_export(load_path)
    if export is None:
        problems.add(f"load_path={load_path} holds no {CONFIG_NAME}; give a save_pretrained export or a run "
                     "directory with export/")
        return None
    try:
        return json.loads((export / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        problems.add(f"load_path={load_path}: {export / CONFIG_NAME} is not readable JSON ({err})")
        return None


# ---------------------------------------------------------------------------------------------- runs
def check_train(cfg: DictConfig) -> None:
    """Every cheap check of a training run; raises :class:`PreflightError` listing all problems."""
    problems = Problems()
    if not _missing_values(cfg, problems):
        problems.extend(train_config_problems(cfg))
        check_vision(problems, cfg.model.vision)
        check_lm(problems, "lm.name", cfg.lm.name,
                 packing=(cfg.data is not None and prefix_in_rows(cfg.data)) or False)
        if cfg.data is not None:
            check_shards(problems, "data.train_shards", cfg.data.train_shards, cfg.data_root)
            if cfg.data.val_shards:
                check_shards(problems, "data.val_shards", cfg.data.val_shards, cfg.data_root)
        if cfg.load_path and not os.path.exists(os.path.expanduser(cfg.load_path)):
            problems.add(f"load_path={cfg.load_path} does not exist; give a checkpoint .pt or a run directory "
                         "to resume from")
        if cfg.init_from:
            _export_config(problems, cfg.init_from)
    problems.raise_if_any()


def check_evaluate(cfg: DictConfig) -> None:
    """Every cheap check of an evaluation run; raises :class:`PreflightError` listing all problems."""
    problems = Problems()
    if not _missing_values(cfg, problems):
        problems.extend(evaluate_config_problems(cfg))
        if not cfg.load_path:
            problems.add("load_path is not set; give load_path=<a trained export or run directory>")
        else:
            exported = _export_config(problems, cfg.load_path)
            lm_name = ((exported or {}).get("lm") or {}).get("name")
            if lm_name:
                check_lm(problems, f"the LM of load_path ({lm_name})", lm_name)
        tasks = dict(cfg.eval.tasks)
        selected = list(cfg.tasks) if cfg.tasks else list(tasks)
        for name in selected:
            if name not in tasks:
                problems.add(f"tasks: {name!r} is not a task of eval={cfg.eval.name}; its tasks: {', '.join(tasks)}")
                continue
            task = tasks[name]
            for field in ("shards", "demo_shards"):
                spec = task.get(field)
                if spec:
                    check_shards(problems, f"eval.tasks.{name}.{field}", spec, cfg.data_root)
            root = task.get("root")
            if task.get("kind") == "deepmind" and not root:
                problems.add(f"eval.tasks.{name}.root is not set; give the folder of the extracted few-shot archives")
            elif root and not os.path.isdir(os.path.expanduser(root)):
                problems.add(f"eval.tasks.{name}.root={root} is not a folder; extract the released few-shot "
                             "archives there (docs/data.md) or fix data_root")
    problems.raise_if_any()
