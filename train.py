"""Train Frozen: ``python train.py model=nf_resnet50 lm=gpt2 data=coco`` (see README for the config tree).

A thin Hydra shim: compose and type-check the config, pick the run directory, then hand a typed
``TrainConfig`` to :func:`frozen.train.train`. ``num_gpus=N`` without torchrun spawns N workers here.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, OmegaConf

from frozen.config import TrainConfig, register_configs

register_configs()


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Hydra config -> typed dataclasses; the original README's ``data_root`` reaches the data config."""
    typed: TrainConfig = OmegaConf.to_object(cfg)
    typed.data.data_root = typed.data_root
    return typed


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from frozen.train import dist
    from frozen.train.loop import train

    cfg.run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    typed = to_train_config(cfg)
    world = typed.num_gpus * typed.num_nodes
    if world > 1 and "RANK" not in os.environ and not dist.under_slurm():
        dist.spawn(train, (typed,), num_local=typed.num_gpus, num_nodes=typed.num_nodes)
        return float("nan")  # each worker logs its own; rank 0 writes metrics.jsonl in the run dir
    return train(typed)["loss"]


if __name__ == "__main__":
    main()
