"""The resume rules of frozen.train.resume on configs alone (no training: milliseconds, so mutation testing can
run them per mutant): which changed keys are refused, all in one message; which are listed and recorded; what
an export must share with the run that starts from it."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from frozen.config import TrainConfig
from frozen.config.train import DataConfig
from frozen.core.dist import DistInfo
from frozen.errors import FrozenConfigError
from frozen.train import resume

CKPT = Path("run/checkpoints/step_00000005.pt")


def cfg_in(run_dir: Path) -> TrainConfig:
    return TrainConfig(data=DataConfig(train_shards="caps/train-*.tar"), run_dir=str(run_dir))


def state_of(cfg: TrainConfig, world_size: int = 1, **changes) -> dict:
    """A checkpoint's state saved by ``cfg`` with dotted keys of its config changed (the saved values)."""
    config = copy.deepcopy(dataclasses.asdict(cfg))
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return {"config": config, "rng": [None] * world_size, "step": 5}


def check(state, cfg, world_size=1, rank=0):
    logged: list[str] = []
    resume._check_compatible(state, cfg, DistInfo(rank=rank, world_size=world_size), CKPT, logged.append)
    return logged


REFUSED = [
    *(f"data.{k}" for k in ("train_shards", "shuffle_buffer", "num_workers", "per_image_caption", "max_length")),
    "data_root", "trainer.batch_size", "per_gpu_batchsize", "num_gpus", "num_nodes", "seed",
    "model.num_prefix_tokens", "model.vision", "lm.name",
]


@pytest.mark.parametrize("key", REFUSED)
def test_each_key_that_breaks_exact_resume_is_refused(tmp_path, key):
    cfg = cfg_in(tmp_path)
    now = resume._flat(dataclasses.asdict(cfg))[key]
    saved = f"other-{now}" if isinstance(now, str) else (now or 0) + 7
    with pytest.raises(FrozenConfigError) as info:
        check(state_of(cfg, **{key: saved}), cfg)
    assert str(info.value) == (
        f"cannot resume from {CKPT}: 1 setting(s) that fix the model or the batch order differ from the checkpoint "
        f"(saved -> now): {key} {saved!r} -> {now!r}; resume with the saved values, or start a new run_dir "
        "(init_from=<its export> starts from the trained weights)")
    assert not (tmp_path / resume.RESUME_CHANGES).exists()


def test_every_refusal_at_once_with_the_world_size(tmp_path):
    cfg = cfg_in(tmp_path)
    state = state_of(cfg, world_size=2, seed=3, **{"trainer.batch_size": 4, "trainer.lr": 1.0})
    batch = cfg.trainer.batch_size
    with pytest.raises(FrozenConfigError, match=rf": 3 setting\(s\) .*: seed 3 -> 0, trainer.batch_size 4 -> {batch}, "
                                                r"world size 2 -> 1; resume"):
        check(state, cfg)


def test_changes_that_keep_resume_exact_are_logged_and_recorded_once_per_resume(tmp_path):
    cfg = cfg_in(tmp_path / "run")
    state = state_of(cfg, **{"trainer.lr": 0.5, "trainer.max_steps": 7, "run_dir": "/elsewhere", "load_path": "x"})
    logged = check(state, cfg)
    assert logged == [f"[yellow]resuming from {CKPT} at step 5 with changed settings: trainer.lr 0.5 -> "
                      f"{cfg.trainer.lr!r}, trainer.max_steps 7 -> {cfg.trainer.max_steps!r}[/yellow]"]
    assert check(state, cfg) == logged
    lines = (tmp_path / "run" / resume.RESUME_CHANGES).read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == json.loads(lines[1]) == {
        "step": 5, "checkpoint": str(CKPT),
        "changes": {"trainer.lr": [0.5, cfg.trainer.lr], "trainer.max_steps": [7, cfg.trainer.max_steps]}}
    # nothing changed (where the run is does not count): nothing logged or recorded
    assert check(state_of(cfg, run_dir="/elsewhere"), cfg) == []
    assert len((tmp_path / "run" / resume.RESUME_CHANGES).read_text().splitlines()) == 2
    # another rank checks the same, but only rank 0 logs and writes
    assert check(state, cfg, world_size=1, rank=1) == []
    assert len((tmp_path / "run" / resume.RESUME_CHANGES).read_text().splitlines()) == 2


def test_the_record_is_written_where_the_run_dir_does_not_exist_yet_and_any_value_is_recorded(tmp_path):
    cfg = cfg_in(tmp_path / "new" / "nested" / "run")  # resuming from load_path= into a fresh run_dir
    state = state_of(cfg, **{"trainer.lr": {0.5}})  # a value JSON cannot hold: recorded as its text
    check(state, cfg)
    (line,) = (tmp_path / "new" / "nested" / "run" / resume.RESUME_CHANGES).read_text().splitlines()
    assert json.loads(line)["changes"] == {"trainer.lr": ["{0.5}", cfg.trainer.lr]}


def test_a_key_only_one_side_has_counts_as_changed(tmp_path):
    cfg = cfg_in(tmp_path)
    state = state_of(cfg)
    state["config"]["trainer"]["gone"] = 1
    (line,) = check(state, cfg)
    assert "trainer.gone 1 -> None" in line
    state = state_of(cfg)
    state["config"]["model"]["gone"] = 1  # a model key the code no longer has: refused
    with pytest.raises(FrozenConfigError, match="model.gone 1 -> None"):
        check(state, cfg)


def test_flat_and_the_rule():
    assert resume._flat({"a": {"b": 1, "c": {"d": [2]}}, "e": None}) == {"a.b": 1, "a.c.d": [2], "e": None}
    assert resume._breaks_exact_resume("model.anything") and resume._breaks_exact_resume("lm.dtype")
    assert resume._breaks_exact_resume("data.max_length") and resume._breaks_exact_resume("seed")
    assert not resume._breaks_exact_resume("trainer.lr") and not resume._breaks_exact_resume("data.val_shards")
    assert not resume._breaks_exact_resume("data") and not resume._breaks_exact_resume("models.x")
    assert not resume._breaks_exact_resume("seed.x") and not resume._breaks_exact_resume("data.train_shards.x")


def test_an_export_must_have_the_same_model_and_lm():
    now = {"model": {"k": 2, "vision": "nf"}, "lm": {"name": "gpt2"}, "trainer": {"lr": 1}}
    resume._check_same_model({"model": {"k": 2, "vision": "nf"}, "lm": {"name": "gpt2"}, "trainer": {"lr": 9}},
                             now, Path("exp"), "start from it with")
    with pytest.raises(FrozenConfigError) as info:
        resume._check_same_model({"model": {"k": 3, "vision": "nf"}, "lm": {"name": "gpt2"}}, now, Path("exp"),
                                 "start from it with")
    assert str(info.value) == ("exp was trained with a different model config {'k': (3, 2)} (saved, now); start "
                               "from it with the same settings or start a new run directory")
    with pytest.raises(FrozenConfigError, match=r"^exp was trained with a different lm config \{'name': "
                                                r"\('opt', 'gpt2'\)\}"):
        resume._check_same_model({"model": now["model"], "lm": {"name": "opt"}}, now, Path("exp"), "x")
    with pytest.raises(FrozenConfigError, match=r"different model config \{'k': \(None, 2\), 'vision': "
                                                r"\(None, 'nf'\)\}"):
        resume._check_same_model({"lm": now["lm"]}, now, Path("exp"), "x")
