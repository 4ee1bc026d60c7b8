"""Evaluation, one module per task kind, each doing load -> queries -> generate -> score:
``caption`` (BLEU-4, CIDEr, perplexity), ``vqa`` (official VQA accuracy, demonstrations) and
``fewshot`` (binding / DeepMind episodes; their format and sets in ``episodes`` and ``deepmind``).
They share ``answer`` (queries, generation on this rank + gathering across ranks), ``context``
(what a kind runs with), ``store`` (rows, predictions, results.json) and ``metrics`` / ``stats``;
``position`` owns the position check (the ``text_first`` line and the image-first minus text-first gap).
``run.evaluate`` runs a preset; results tables are formatted by ``frozen.core.results``. ``protocol``
says what makes two evaluations comparable; ``compare`` / ``compare_report`` put runs side by side
(``make compare``).
The task schemas (one per kind) live in ``frozen.config``.

Submodules are imported explicitly (``from frozen.eval.metrics import vqa_accuracy``) so that using
one does not pay for the other's imports.
May import: ``frozen.config``, ``frozen.errors``, ``frozen.model``, ``frozen.data``, ``frozen.core``.
Never ``frozen.train``.
"""
