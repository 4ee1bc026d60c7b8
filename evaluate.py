"""Evaluate a trained Frozen model: ``python evaluate.py load_path=outputs/... eval=vqav2``.

Hydra shim: compose the preset (conf/eval/*.yaml), check everything cheap at once
(:func:`frozen.preflight.check_evaluate`: values, load_path, the export's LM offline, each selected
task's data), then :func:`frozen.eval.run.evaluate` (``checked=True``: the values are not checked
twice). ``num_gpus=N`` without torchrun spawns N workers; the items are split exactly across them.
A user error prints one line per problem and exits 2 (:mod:`frozen.cli`); ``debug=true`` shows the
traceback.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, OmegaConf

from frozen import cli
from frozen.config import EvaluateConfig, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@cli.user_errors_exit
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from frozen.preflight import check_evaluate

    check_evaluate(cfg)  # before the model or any data is loaded
    from frozen.core import dist
    from frozen.eval.run import evaluate

    cfg.run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    typed: EvaluateConfig = OmegaConf.to_object(cfg)
    # check_evaluate above held the value check: evaluate() does not repeat it (checked=True).
    if typed.num_gpus > 1 and "RANK" not in os.environ and not dist.under_slurm():
        dist.spawn(evaluate, (typed, True), num_local=typed.num_gpus)
    else:
        evaluate(typed, checked=True)


if __name__ == "__main__":
    cli.run(main)
