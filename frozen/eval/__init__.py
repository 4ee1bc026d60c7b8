"""Evaluation: official VQA / captioning metrics (:mod:`frozen.eval.metrics`) and few-shot episode
sets with their prompt rendering (:mod:`frozen.eval.episodes`).

Submodules are imported explicitly (``from frozen.eval.metrics import vqa_accuracy``) so that using
one does not pay for the other's imports.
"""
