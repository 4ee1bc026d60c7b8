"""Training-protocol tests written to catch plausible bugs (issue 17): exact resume on data whose
batches differ, with shuffling, workers and dropout; exact bad-data counts through training and across
a resume; the data-parallel gradient scale; and the train-blind ablation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from trainkit import (
    assert_same_weights,
    assert_two_ranks_equal_one_process,
    losses,
    make_cfg,
    metrics,
    resume_run,
    train_in_worker,
    trained_weights,
    write_varied_shard,
)

# Per epoch of bad/train-000000.tar (20 samples, batch 4, no shuffle, no workers), by hand:
#   batch 1: samples 0-3;  sample 4 has no caption (counted while batch 2 is filled);  batch 2: 5-8
#   batch 3: 9-12;  13-16 all fail to decode: that batch is dropped, its 4 counts go to the next one
#   batch 4: 17, 18, 19 + epoch 1's 0;  batch 5: 1, 2, 3, 5 (4 again without caption);  batch 6: 6-9
BAD = {4: "missing_caption", 13: "corrupt_image", 14: "corrupt_image", 15: "corrupt_image", 16: "corrupt_image"}
SKIPPED_AFTER_STEP = {1: 0, 2: 1, 3: 1, 4: 5, 5: 6, 6: 6}


@pytest.fixture(scope="module")
def varied_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("varied")
    write_varied_shard(root / "vary" / "train-000000.tar", 24)
    write_varied_shard(root / "vary" / "train-000001.tar", 24)
    write_varied_shard(root / "bad" / "train-000000.tar", 20, bad=BAD)
    write_varied_shard(root / "par" / "train-000000.tar", 32)
    return root



def test_resume_is_exact_with_dropout_shuffling_and_workers(tmp_path, varied_data, tiny_gpt2):
    """lm.trainable (the finetuned ablation) keeps GPT-2's dropout on; 2 workers + a shuffle buffer
    over samples that all differ, so a batch skipped too many or too few, or an RNG state not
    restored (dropout masks), changes the continuation."""
    from transformers import AutoConfig

    from frozen.data.pipeline import build_train_loader
    from frozen.model.lm import load_tokenizer
    from frozen.train.loop import train

    assert AutoConfig.from_pretrained(tiny_gpt2).resid_pdrop > 0, "the test needs an LM with dropout"
    kwargs = dict(
        data={"train_shards": "vary/train-*.tar", "num_workers": 2, "shuffle_buffer": 8},
        lm={"trainable": True},
        batch_size=4,
        lr=1e-3,
    )
    cfg = make_cfg(tmp_path / "full", varied_data, tiny_gpt2, max_steps=6, **kwargs)
    loader = iter(build_train_loader(cfg.data, load_tokenizer(str(tiny_gpt2)), data_root=cfg.data_root, image_size=32,
                                     batch_size=4, seed=0))
    keys = [tuple(next(loader)["keys"]) for _ in range(6)]
    assert len({k for batch in keys for k in batch}) == 24, "6 batches of 4 different samples"

    train(cfg)
    resume_run(make_cfg(tmp_path / "cut", varied_data, tiny_gpt2, **kwargs), kill_after=5, ckpt_at=3, total=6)
    assert_same_weights(trained_weights(cfg.run_dir), trained_weights(tmp_path / "cut"))
    assert losses(cfg.run_dir) == losses(tmp_path / "cut")


def test_bad_data_counts_are_exact_through_training_and_across_aresume_run(tmp_path, varied_data, tiny_gpt2):
    from frozen.train import checkpoint as ckpt
    from frozen.train.loop import train

    kwargs = dict(data={"train_shards": "bad/train-*.tar"}, batch_size=4, lr=1e-3)
    full = make_cfg(tmp_path / "full", varied_data, tiny_gpt2, max_steps=6, **kwargs)
    result = train(full)
    assert metrics(full.run_dir, "skipped_samples") == SKIPPED_AFTER_STEP
    assert result["skipped_samples"] == 6
    state = ckpt.load(ckpt.latest_checkpoint(full.run_dir))
    assert state["data"]["skipped"] == {"missing_caption": 2, "corrupt_image": 4}
    assert state["data"]["samples"] == 24  # 6 batches of 4

    # Checkpoint after batch 3 (sample 4's count already in it), killed after 5, resumed to 6: the
    # skipped batches are not counted again, the checkpoint's counts are not forgotten.
    resumed = resume_run(make_cfg(tmp_path / "cut", varied_data, tiny_gpt2, **kwargs), kill_after=5, ckpt_at=3, total=6)
    assert metrics(tmp_path / "cut", "skipped_samples") == SKIPPED_AFTER_STEP
    assert resumed["skipped_samples"] == 6
    assert ckpt.load(ckpt.latest_checkpoint(tmp_path / "cut"))["data"] == state["data"]



def test_data_parallel_gradient_is_the_global_mean_with_unequal_tokens_per_rank(tmp_path, varied_data, tiny_gpt2):
    """Two gloo ranks x 4 vs one process x 8 on the same 8 samples; rank 0 gets the 2-word captions,
    rank 1 the 7-word ones. The pre-clip gradient norm (not hidden by Adam) must agree: a per-rank
    mean, or a gradient not scaled by the world size, gives another norm while the loss may agree."""
    from frozen.core import dist
    from frozen.train.loop import train

    kwargs = dict(data={"train_shards": "par/train-*.tar"}, max_steps=2, batch_size=8, lr=1e-3, grad_clip=1e6)
    one = make_cfg(tmp_path / "one", varied_data, tiny_gpt2, **kwargs)
    train(one)
    two = dataclasses.replace(make_cfg(tmp_path / "two", varied_data, tiny_gpt2, **kwargs), num_gpus=2)
    dist.spawn(train_in_worker, (two,), num_local=2)
    assert_two_ranks_equal_one_process(one.run_dir, two.run_dir)


@pytest.mark.parametrize("blind", [True, False])
def test_train_blind_feeds_the_model_black_images(tmp_path, caption_data, tiny_gpt2, monkeypatch, blind):
    from frozen.model.frozen_model import FrozenModel
    from frozen.train.loop import train

    seen: list[torch.Tensor] = []
    forward = FrozenModel.forward

    def recording(model, images, *args, **kwargs):
        if torch.is_grad_enabled():  # training forwards only
            seen.append(images.detach().clone())
        return forward(model, images, *args, **kwargs)

    monkeypatch.setattr(FrozenModel, "forward", recording)
    train(make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=2, blind=blind))
    assert len(seen) == 2
    if blind:
        assert all(torch.count_nonzero(images) == 0 for images in seen)
    else:
        assert all(images.abs().sum() > 0 for images in seen)
