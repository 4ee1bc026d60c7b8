"""Training on interleaved rows (data.interleave=true): it resumes exactly after a preemption, a resume that
would change the layout is refused, two gloo ranks train it, and an LM that cannot take prefix slots inside
a row is refused before it loads."""

from __future__ import annotations

import dataclasses
import math

import pytest
from trainkit import (
    assert_same_weights,
    losses,
    make_cfg,
    resume_run,
    train_in_worker,
    trained_weights,
    write_varied_shard,
)

from frozen.errors import FrozenConfigError
from frozen.preflight import PreflightError, check_train


@pytest.fixture(scope="module")
def interleave_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("interleave")
    write_varied_shard(root / "vary" / "train-000000.tar", 24)
    write_varied_shard(root / "vary" / "train-000001.tar", 24)
    return root


def _cfg(tmp, data_root, lm_dir, **data):
    data = {"train_shards": "vary/train-*.tar", "num_workers": 2, "shuffle_buffer": 8, "interleave": True,
            "max_length": 40, **data}
    return make_cfg(tmp, data_root, lm_dir, data=data, batch_size=8, lr=1e-3)


def test_interleaved_training_resumes_exactly(tmp_path, interleave_data, tiny_lm_dirs):
    from frozen.train.loop import train

    llama = tiny_lm_dirs["llama"]
    full = _cfg(tmp_path / "full", interleave_data, llama, interleave_separator="\n", text_before_image=0.5)
    train(full)
    assert len(losses(full.run_dir)) == 6 and all(math.isfinite(v) for v in losses(full.run_dir).values())
    resume_run(_cfg(tmp_path / "cut", interleave_data, llama, interleave_separator="\n", text_before_image=0.5),
               kill_after=5, ckpt_at=3, total=6)
    assert_same_weights(trained_weights(full.run_dir), trained_weights(tmp_path / "cut"))
    assert losses(full.run_dir) == losses(tmp_path / "cut")
    # The same examples laid out one pair per row train differently: the layout is what the run learns from.
    single = _cfg(tmp_path / "single", interleave_data, llama, interleave=False)
    train(single)
    assert losses(single.run_dir)[1] != pytest.approx(losses(full.run_dir)[1], rel=1e-6)


def test_a_resume_that_would_change_the_layout_is_refused(tmp_path, interleave_data, tiny_lm_dirs):
    from frozen.train.loop import train

    cfg = _cfg(tmp_path, interleave_data, tiny_lm_dirs["llama"])
    train(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=2, ckpt_every=2)))
    flipped = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, interleave=False, lead_text=" Picture:"))
    with pytest.raises(FrozenConfigError, match=r"2 setting\(s\).*data.interleave True -> False, "
                                                r"data.lead_text '' -> ' Picture:'"):
        train(flipped)


@pytest.mark.slow  # ~60 s: two spawned gloo ranks, twice
def test_two_gloo_ranks_train_interleaved_rows_under_ddp_and_fsdp(tmp_path, interleave_data, tiny_gpt2):
    """Each rank lays out its own rows; FSDP (the frozen LM sharded, gathered layer by layer) trains the same
    rows as DDP to the same weights and losses, up to float summation order."""
    from frozen.core import dist

    runs = {}
    for strategy in ("ddp", "fsdp"):
        cfg = dataclasses.replace(_cfg(tmp_path / strategy, interleave_data, tiny_gpt2), num_gpus=2)
        runs[strategy] = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=2,
                                                                              strategy=strategy))
        dist.spawn(train_in_worker, (runs[strategy],), num_local=2)
    ddp, fsdp = losses(tmp_path / "ddp"), losses(tmp_path / "fsdp")
    assert set(ddp) == {1, 2} and all(math.isfinite(v) for v in ddp.values())
    assert fsdp == pytest.approx(ddp, rel=1e-5)
    assert_same_weights(trained_weights(tmp_path / "ddp"), trained_weights(tmp_path / "fsdp"), rtol=1e-3, atol=2e-5)


def test_preflight_refuses_interleaving_with_an_lm_that_cannot_take_slots_in_a_row(tmp_path, interleave_data,
                                                                                    tiny_lm_dirs):
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(_cfg(tmp_path, interleave_data, tiny_lm_dirs["opt"], val_shards=None))
    with pytest.raises(PreflightError) as err:
        check_train(cfg)
    assert err.value.problems == [
        "lm.name: data.interleave=true: the 'opt' LM cannot take prefix slots inside a row (its attention mask "
        "ignores position_ids); set data.interleave=false for it (packing supports gpt2, llama, qwen2)"]
    cfg.data.interleave = False
    check_train(cfg)  # one pair per padded row: fine
