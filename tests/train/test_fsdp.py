"""trainer.strategy=fsdp on CPU: 2 gloo processes, the tiny LMs. Same training as ddp and as one
process, exact resume (also across strategies), and each rank holding about half of the LM."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from trainkit import assert_same_weights, losses, make_cfg, train_in_worker, trained_weights

from frozen.errors import FrozenConfigError


def _spawn(cfg):
    from frozen.core import dist

    dist.spawn(train_in_worker, (dataclasses.replace(cfg, num_gpus=2),), num_local=2)


def _with(cfg, **trainer):
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, **trainer))


def test_fsdp_trains_like_one_process_resumes_exactly_and_resumes_under_ddp(tmp_path, caption_data, tiny_gpt2):
    """Four 2-process runs: fsdp 3 steps; fsdp killed after 2 with a checkpoint at 1, restarted
    under fsdp (bit-identical) and, from a copy of the same checkpoint, under ddp."""
    from frozen.train import checkpoint as ckpt
    from frozen.train.loop import train

    base = dict(max_steps=3, batch_size=8, lr=1e-3)
    one = make_cfg(tmp_path / "one", caption_data, tiny_gpt2, **base)
    train(one)
    fsdp = make_cfg(tmp_path / "fsdp", caption_data, tiny_gpt2, strategy="fsdp", **base)
    _spawn(fsdp)
    # Float summation order differs between 1x8 and 2x4: the tolerance of test_train's ddp test.
    assert_same_weights(trained_weights(one.run_dir), trained_weights(fsdp.run_dir), rtol=1e-3, atol=2e-5)
    assert losses(fsdp.run_dir) == pytest.approx(losses(one.run_dir), rel=1e-5)

    cut = make_cfg(tmp_path / "cut", caption_data, tiny_gpt2, strategy="fsdp", **{**base, "max_steps": 2}, ckpt_every=1)
    _spawn(cut)
    (tmp_path / "cut" / "checkpoints" / "step_00000002.pt").unlink()
    shutil.copytree(tmp_path / "cut", tmp_path / "to_ddp")
    _spawn(_with(cut, max_steps=3))
    assert_same_weights(trained_weights(fsdp.run_dir), trained_weights(cut.run_dir))
    assert losses(fsdp.run_dir) == losses(cut.run_dir)

    # The same fsdp checkpoint resumed under ddp: the trainable weights are the same tensors, and
    # the continuation equals fsdp's up to float summation order.
    to_ddp = dataclasses.replace(_with(cut, max_steps=3, strategy="ddp"), run_dir=str(tmp_path / "to_ddp"))
    _spawn(to_ddp)
    assert ckpt.latest_checkpoint(to_ddp.run_dir).name == "step_00000003.pt"
    assert_same_weights(trained_weights(fsdp.run_dir), trained_weights(to_ddp.run_dir), rtol=1e-5, atol=1e-7)
    assert losses(to_ddp.run_dir) == pytest.approx(losses(fsdp.run_dir), rel=1e-6)


def _shard_and_measure(lm_dir, out_dir):
    import torch

    from frozen.config import LMConfig, ModelConfig
    from frozen.core import dist
    from frozen.model.frozen_model import FrozenModel
    from frozen.train.fsdp import resident_lm_bytes, shard_lm

    info = dist.init("cpu")
    torch.manual_seed(0)
    full = FrozenModel(ModelConfig(vision="tiny_cnn", image_size=32), LMConfig(name=str(lm_dir)))
    expected = {n: t.clone() for n, t in full.lm.state_dict().items()}
    before = resident_lm_bytes(full.lm)
    # As in training: the LM is built on the meta device, shard_lm fills the shards from rank 0.
    model = FrozenModel(ModelConfig(vision="tiny_cnn", image_size=32), LMConfig(name=str(lm_dir)), lm_on_meta=True)
    shard_lm(model, info, "fp32")
    after = resident_lm_bytes(model.lm)
    # Every rank's shards hold rank 0's weights, and so do its buffers (non-persistent ones included).
    gathered = {n: t.full_tensor() if hasattr(t, "full_tensor") else t for n, t in model.lm.state_dict().items()}
    assert gathered.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(gathered[name], tensor), name
    for (name, buffer), (_, reference) in zip(model.lm.named_buffers(), full.lm.named_buffers()):
        assert torch.equal(buffer, reference), name
    (out_dir / f"rank{info.rank}.json").write_text(json.dumps({"before": before, "after": after}))
    dist.cleanup()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_each_fsdp_rank_holds_half_of_rank_0s_lm(tmp_path, tiny_lm_dirs, kind):
    from frozen.core import dist

    dist.spawn(_shard_and_measure, (tiny_lm_dirs[kind], tmp_path), num_local=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        local_before, whole = r["before"]
        assert local_before == whole, "unsharded, a rank holds the whole LM"
        local, whole_after = r["after"]
        assert whole_after == whole
        assert 0.45 < local / whole < 0.55, f"rank holds {local / whole:.1%} of the LM's parameter bytes"
    assert ranks[0]["after"][0] + ranks[1]["after"][0] == pytest.approx(ranks[0]["before"][1], rel=0.02)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"strategy": "zero3"}, "trainer.strategy must be ddp or fsdp, got 'zero3'"),
        ({"fsdp_cpu_offload": True}, "fsdp_cpu_offload=true needs trainer.strategy=fsdp"),
        ({"fsdp_cpu_offload": True, "strategy": "fsdp"}, "in host memory already: set it to false"),
    ],
)
def test_bad_strategy_settings_fail_before_loading(tmp_path, caption_data, override, message):
    from frozen.train.loop import train

    with pytest.raises(FrozenConfigError, match=message):
        train(make_cfg(tmp_path / "run", caption_data, tmp_path / "no_lm_here", **override))


def test_fsdp_refuses_a_trainable_lm(tmp_path, caption_data):
    from frozen.train.loop import train

    cfg = make_cfg(tmp_path / "run", caption_data, tmp_path / "no_lm_here", lm={"trainable": True}, strategy="fsdp")
    with pytest.raises(FrozenConfigError, match="use trainer.strategy=ddp for them"):
        train(cfg)
