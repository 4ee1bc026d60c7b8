"""What makes two evaluations comparable: a task's *protocol* (everything but the model that decides its
numbers: preset, data, prompt templates, shots, number of questions / episodes / trials, decoding length,
metric revision). ``evaluate()`` writes it into results.json (``"protocol"``: {task: {...}});
``make compare`` (:mod:`frozen.eval.compare`) flags runs whose protocols differ, and rebuilds it from the
saved config for a results.json written before the key existed (its metric revision then reads
:data:`NOT_RECORDED`).

The conditions a task ran (image, no_image, ...) are not part of it: they are separate cells of the table.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from frozen.eval.metrics import vqa_accuracy

NOT_RECORDED = "not recorded"
VQA_REVISION = vqa_accuracy.__kwdefaults__["revision"]  # the revision the vqa kind scores with (its default)


def metric_revisions(kind: str) -> dict[str, str]:
    """The code that scores a kind: the official vqaEval.py revision reproduced, pycocoevalcap's version."""
    if kind == "vqa":
        return {"vqa_accuracy": f"vqaEval.py {VQA_REVISION}"}
    if kind == "caption":
        try:
            return {"BLEU/CIDEr": f"pycocoevalcap {metadata.version('pycocoevalcap')}"}
        except metadata.PackageNotFoundError:
            return {"BLEU/CIDEr": "pycocoevalcap (not installed)"}
    return {"accuracy": "exact match after normalisation"}


def task_protocol(task: dict[str, Any], config: dict[str, Any], revisions: dict[str, str] | None) -> dict[str, Any]:
    """The protocol of one task: ``task`` is its config as a dict (results.json's
    ``config.eval.tasks[name]``), ``config`` the whole evaluation config; ``revisions`` the metric
    revisions (None: an old results.json that did not record them)."""
    out = {"preset": config.get("eval", {}).get("name")}
    out |= {key: value for key, value in task.items() if key != "conditions"}
    if config.get("max_examples") is not None:  # evaluate.py's max_examples overrides every task's
        out["max_examples"] = config["max_examples"]
    out["metric_revision"] = revisions if revisions is not None else NOT_RECORDED
    return out


def protocols(config: dict[str, Any], recorded: bool = True) -> dict[str, dict[str, Any]]:
    """``{task: protocol}`` of an evaluation run, as evaluate() records it (``config``: the run's config as a
    dict, with ``eval.tasks`` as dicts). ``recorded=False``: rebuilt for an old results.json, whose metric
    revisions are unknown (:data:`NOT_RECORDED`): today's code may score differently."""
    tasks = config.get("eval", {}).get("tasks", {})
    run = config.get("tasks")
    return {name: task_protocol(task, config, metric_revisions(task.get("kind", "")) if recorded else None)
            for name, task in tasks.items() if not run or name in run}
