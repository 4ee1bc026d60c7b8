"""Train Frozen: ``python train.py model=nf_resnet50 lm=gpt2 data=coco`` (see README for the config tree).

A thin Hydra shim: compose the config, check everything cheap at once (:func:`frozen.preflight.check_train`:
values, shards, paths, the LM offline), pick the run directory, then hand a typed ``TrainConfig`` to
:func:`frozen.train.loop.train` (``checked=True``: the values are not checked twice). ``num_gpus=N``
without torchrun spawns N workers here. A user error prints one line per problem and exits 2
(:mod:`frozen.cli`); ``debug=true`` shows the traceback.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, OmegaConf

from frozen import cli
from frozen.config import TrainConfig, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@cli.user_errors_exit
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from frozen.preflight import check_train

    check_train(cfg)  # before any model, tokenizer or data is loaded
    from frozen.core import dist
    from frozen.train.loop import train

    cfg.run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    typed: TrainConfig = OmegaConf.to_object(cfg)
    world = typed.num_gpus * typed.num_nodes
    # check_train above held the value check: train() does not repeat it (checked=True).
    if world > 1 and "RANK" not in os.environ and not dist.under_slurm():
        dist.spawn(train, (typed, True), num_local=typed.num_gpus, num_nodes=typed.num_nodes)
        return float("nan")  # each worker logs its own; rank 0 writes metrics.jsonl in the run dir
    return train(typed, checked=True)["loss"]


if __name__ == "__main__":
    cli.run(main)
