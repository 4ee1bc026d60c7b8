"""Evaluation: metrics with the official code's behaviour (``metrics``), few-shot episodes
(``episodes``: format, prompts, the offline binding set; ``deepmind``: the released sets),
queries per task kind and condition (``tasks``), one function per task kind
(``runners``: ``eval_vqa``, ``eval_caption``, ``eval_episodes``), the harness that generates and
gathers (``harness``), results files and tables (``report``) and the entry point (``run.evaluate``).
The task schemas (one per kind) live in ``frozen.config``.

Submodules are imported explicitly (``from frozen.eval.metrics import vqa_accuracy``) so that using
one does not pay for the other's imports.
May import: ``frozen.config``, ``frozen.errors``, ``frozen.model``, ``frozen.data``,
``frozen.core.dist`` / ``frozen.core.logging`` (process groups and console). Never ``frozen.train.loop``.
"""
