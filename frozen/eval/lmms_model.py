"""The ``frozen`` model of lmms-eval (``python -m lmms_eval --model frozen --model_args pretrained=PATH``).

Registered through lmms-eval's entry-point group ``lmms_eval.models`` (pyproject.toml names
:func:`manifest`), so lmms-eval's own command line finds it once ``frozen`` is installed next to it
(``make lmms-eval`` builds that environment, ``.venv-lmms``). This module imports lmms-eval; the logic
it runs is in :mod:`frozen.eval.lmms`, which does not.

``--model_args``: ``pretrained`` (an export folder, a run directory or a hub id of an export),
``precision`` (fp32 | bf16), ``max_new_tokens`` (when a task sets none). lmms-eval's ``--device``
(default: CUDA when available) and ``--batch_size`` (prompts generated together) apply as usual.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from frozen.core.precision import autocast_context
from frozen.errors import InputError
from frozen.eval.lmms import generation_options, interleave, loglikelihoods
from frozen.model.frozen_model import FrozenModel

MODEL_ID = "frozen"


def manifest() -> ModelManifest:
    """The entry point's payload: the model id and this module's class."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.FrozenLMMS")


class FrozenLMMS(lmms):
    """A Frozen export answering lmms-eval's generate_until and loglikelihood requests."""

    is_simple = True

    def __init__(self, pretrained: str, device: str | None = None, batch_size: int | str = 1,
                 precision: str = "fp32", max_new_tokens: int | str = 32, max_batch_size: Any = None,
                 **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise InputError(f"unknown --model_args for frozen: {', '.join(sorted(unknown))}; "
                             "use pretrained=PATH[,precision=fp32|bf16][,max_new_tokens=N]")
        if precision not in ("fp32", "bf16"):
            raise InputError(f"precision must be fp32 or bf16, got {precision!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = FrozenModel.from_pretrained(pretrained).to(self.device).eval()
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.autocast = autocast_context(precision, self.device)

    def _visuals(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> list[Any]:
        return list(doc_to_visual(self.task_dict[task][split][doc_id]) or []) if doc_to_visual else []

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, batched over requests that share their generation settings (in request order)."""
        answers: list[str] = []
        args = [r.args for r in requests]
        for _, run in itertools.groupby(args, key=lambda a: repr(sorted((a[1] or {}).items()))):
            run = list(run)
            prompts = [interleave(ctx, self._visuals(visual, doc_id, task, split))
                       for ctx, _, visual, doc_id, task, split in run]
            options = generation_options(run[0][1], max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
            with self.autocast:
                answers += self.model.generate(None, prompts, options)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """``(-log-likelihood, is_greedy)`` per request, as lmms-eval 0.7.3 scores them, in two ways unlike
        lm-eval's API text: its multiple-choice scoring picks the choice with the *smallest* value
        (``np.argmin``: its own models return a loss), so the value is the negative summed
        log-probability of the continuation; and its evaluator turns every response that is not a
        string into its string, except a ``GenerationResult``, whose ``text`` it hands on unchanged,
        so each pair is wrapped in one."""
        items = []
        for request in requests:
            if len(request.args) == 2:  # acc_mutual_info's unconditional requests: no context, no images
                (context, continuation), visuals = request.args, []
            else:
                context, target, visual, doc_id, task, split = request.args
                doc = self.task_dict[task][split][doc_id]
                continuation = target if isinstance(target, str) else str(target(doc))
                visuals = self._visuals(visual, doc_id, task, split)
            items.append((interleave(context, visuals), continuation))
        with self.autocast:
            pairs = loglikelihoods(self.model, items, self.batch_size)
        return [GenerationResult((-ll, greedy)) for ll, greedy in pairs]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the frozen model answers single-round tasks only")
