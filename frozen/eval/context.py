"""What every task kind runs with (:class:`EvalContext`: the model, the run's settings, this rank,
the answerer and the result store) and this rank's share of a task's shard items (:func:`load_items`)."""

from __future__ import annotations

from typing import Any, Callable

from frozen.config import CaptionTaskConfig, EvalTaskBase, EvaluateConfig, SampleTextConfig, VqaTaskConfig
from frozen.core import dist
from frozen.core.precision import autocast_context
from frozen.data.pipeline import iter_eval_samples
from frozen.eval.answer import Answerer
from frozen.eval.store import ResultStore
from frozen.model.frozen_model import FrozenModel


class EvalContext:
    """One model evaluated on this rank: generation through :attr:`answerer`, outputs into :attr:`store`."""

    def __init__(self, model: FrozenModel, cfg: EvaluateConfig, info: dist.DistInfo,
                 log: Callable[[str], None] = print):
        self.model, self.cfg, self.info, self.log = model, cfg, info, log
        self.text = SampleTextConfig()  # prompt/target templates and max_length of the eval samples
        self.image_size = model.model_cfg.image_size
        self.autocast = autocast_context(cfg.precision, info.device)  # the training step's own rule
        self.answerer = Answerer(model, batch_size=cfg.batch_size, autocast=self.autocast, image_size=self.image_size)
        self.store = ResultStore(keep_predictions=info.is_main)

    def limit(self, task: EvalTaskBase) -> int | None:
        return self.cfg.max_examples if self.cfg.max_examples is not None else task.max_examples

    def items(self, task: VqaTaskConfig | CaptionTaskConfig) -> list[Any]:
        """This rank's share of the task's items (:func:`load_items`)."""
        return load_items(task, self.text, data_root=self.cfg.data_root, image_size=self.image_size,
                          rank=self.info.rank, world_size=self.info.world_size, limit=self.limit(task))


def load_items(task: VqaTaskConfig | CaptionTaskConfig, text: SampleTextConfig, *, data_root: str, image_size: int,
               rank: int, world_size: int, limit: int | None) -> list[Any]:
    """This rank's share of the first ``limit`` items of ``task.shards`` (sample i -> rank i % world)."""
    mine = None if limit is None else len(range(rank, limit, world_size))
    items = []
    for example in iter_eval_samples(task.shards, data_root=data_root, image_size=image_size, rank=rank,
                                     world_size=world_size, text=text):
        if mine is not None and len(items) >= mine:
            break
        items.append(example)
    return items

