"""Training with caption packing (data.packing=true): it trains like padding, resumes exactly, and two
gloo ranks equal one process; the COCO preset (which turns packing on) trains and resumes exactly on
generated stand-in shards; an LM that cannot keep captions apart is refused before it loads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from trainkit import (
    assert_same_weights,
    assert_two_ranks_equal_one_process,
    losses,
    make_cfg,
    resume_run,
    train_in_worker,
    trained_weights,
    write_varied_shard,
)

from frozen.config import register_configs
from frozen.preflight import PreflightError, check_train

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


@pytest.fixture(scope="module")
def packing_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing")
    write_varied_shard(root / "vary" / "train-000000.tar", 24)
    write_varied_shard(root / "vary" / "train-000001.tar", 24)
    write_varied_shard(root / "par" / "train-000000.tar", 32)
    write_varied_shard(root / "coco" / "captions-train-000000.tar", 32)
    write_varied_shard(root / "coco" / "captions-val-000000.tar", 8)
    return root



def _packed(tmp, data_root, lm_dir, packing=True, **trainer):
    data = {"train_shards": "vary/train-*.tar", "num_workers": 2, "shuffle_buffer": 8, "packing": packing}
    return make_cfg(tmp, data_root, lm_dir, data=data, batch_size=8, lr=1e-3, **trainer)


def _parallel(tmp, data_root, lm_dir):
    """One shard, read in order: 1 process x 8 and 2 ranks x 4 see the same 8 samples per step (rank 0
    the 2-word captions, rank 1 the 7-word ones: unequal token counts and rows per rank)."""
    data = {"train_shards": "par/train-*.tar", "packing": True}
    return make_cfg(tmp, data_root, lm_dir, data=data, batch_size=8, lr=1e-3, max_steps=2, grad_clip=1e6)


def test_packed_training_equals_padded_training_and_resumes_exactly(tmp_path, packing_data, tiny_lm_dirs):
    from frozen.train.loop import train

    llama = tiny_lm_dirs["llama"]
    padded = _packed(tmp_path / "padded", packing_data, llama, packing=False)
    packed = _packed(tmp_path / "full", packing_data, llama)
    train(padded)
    train(packed)
    for step, loss in losses(padded.run_dir).items():
        assert losses(packed.run_dir)[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    assert_same_weights(trained_weights(padded.run_dir), trained_weights(packed.run_dir), rtol=1e-3, atol=2e-5)

    resume_run(_packed(tmp_path / "cut", packing_data, llama), kill_after=5, ckpt_at=3, total=6)
    assert_same_weights(trained_weights(packed.run_dir), trained_weights(tmp_path / "cut"))
    assert losses(packed.run_dir) == losses(tmp_path / "cut")



def test_two_gloo_ranks_with_packing_equal_one_process(tmp_path, packing_data, tiny_gpt2):
    from frozen.core import dist
    from frozen.train.loop import train

    one = _parallel(tmp_path / "one", packing_data, tiny_gpt2)
    train(one)
    two = dataclasses.replace(_parallel(tmp_path / "two", packing_data, tiny_gpt2), num_gpus=2)
    dist.spawn(train_in_worker, (two,), num_local=2)
    assert_two_ranks_equal_one_process(one.run_dir, two.run_dir)


def _coco(tmp_path, data_root, lm_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[
            "data=coco", "model=tiny_cnn", "model.image_size=32", f"lm.name={lm_dir}", "trainer=debug", "logger=none",
            f"data_root={data_root}", "data.num_workers=0", "trainer.max_steps=6", "trainer.val_every=0",
            "trainer.ckpt_every=0", "trainer.log_every=1", f"run_dir={tmp_path}", *overrides])


def test_coco_preset_trains_packed_and_resumes_exactly(tmp_path, packing_data, tiny_lm_dirs):
    from frozen.train.loop import train

    full = _coco(tmp_path / "full", packing_data, tiny_lm_dirs["llama"])
    assert full.data.packing is True, "the COCO preset trains on packed captions"
    check_train(full)
    train(OmegaConf.to_object(full), checked=True)
    assert set(losses(tmp_path / "full")) == set(range(1, 7))
    cut = OmegaConf.to_object(_coco(tmp_path / "cut", packing_data, tiny_lm_dirs["llama"]))
    resume_run(cut, kill_after=5, ckpt_at=3, total=6, checked=True)
    assert_same_weights(trained_weights(tmp_path / "full"), trained_weights(tmp_path / "cut"))
    assert losses(tmp_path / "full") == losses(tmp_path / "cut")


def test_preflight_refuses_packing_with_an_lm_that_would_mix_captions(tmp_path, packing_data, tiny_lm_dirs):
    with pytest.raises(PreflightError) as err:
        check_train(_coco(tmp_path, packing_data, tiny_lm_dirs["opt"]))
    assert err.value.problems == [
        "lm.name: data.packing=true: the 'opt' LM cannot keep packed captions apart (its attention mask ignores "
        "position_ids); set data.packing=false for it (packing supports gpt2, llama, qwen2)"]
    check_train(_coco(tmp_path, packing_data, tiny_lm_dirs["opt"], "data.packing=false"))  # padded: fine
