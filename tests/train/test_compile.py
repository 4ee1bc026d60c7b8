"""trainer.compile=true: the whole training forward (encoder, mapper, frozen LM) under torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from torch._inductor.cpp_builder import cpp_compiler_search
from trainkit import make_cfg

from frozen.config import TrainerConfig
from frozen.errors import FrozenConfigError
from frozen.model.frozen_model import FrozenModel
from frozen.train.compiled import compile_model
from frozen.train.loop import train


def _loss_and_grads(model: FrozenModel, width: int, num_items: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(width)
    images = torch.rand(3, 3, 32, 32, generator=g)
    ids = torch.randint(0, 300, (3, width), generator=g)
    mask = torch.ones(3, width, dtype=torch.long)
    mask[0, width // 2:] = 0  # a padded row
    loss = model(images, ids, mask, num_items_in_batch=num_items).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_compiled_forward_equals_eager_for_every_width_without_recompiling(tiny_gpt2):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32).train()
    shapes = [(5, 11), (9, 20)]  # caption widths and global target counts change from batch to batch
    eager = [_loss_and_grads(model, *s) for s in shapes]
    keys = list(model.state_dict())
    compile_model(model)
    assert list(model.state_dict()) == keys, "checkpoints and exports keep their keys"
    compiled = [_loss_and_grads(model, *shapes[0])]
    with torch._dynamo.config.patch(error_on_recompile=True):  # dynamic sizes: the next width reuses the graph
        compiled.append(_loss_and_grads(model, *shapes[1]))
    torch._dynamo.reset()
    for (e_loss, e_grads), (c_loss, c_grads) in zip(eager, compiled):
        torch.testing.assert_close(c_loss, e_loss, rtol=1e-5, atol=1e-6)
        assert e_grads.keys() == c_grads.keys() and any(n.startswith("vision.") for n in e_grads)
        assert all(n.startswith(("vision.", "mapper.")) for n in e_grads), "the LM stays frozen"
        for name in e_grads:
            torch.testing.assert_close(c_grads[name], e_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_compile_is_refused_in_one_line_where_it_cannot_run(tmp_path, caption_data, monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("frozen-test-no-such-c++",))
    cpp_compiler_search.cache_clear()
    try:
        # Refused before the model loads: the LM path does not even exist.
        cfg = make_cfg(tmp_path / "run", caption_data, tmp_path / "no-lm", compile=True)
        with pytest.raises(FrozenConfigError, match="trainer.compile=true on CPU needs a C\\+\\+ compiler") as err:
            train(cfg)
        assert "\n" not in str(err.value) and "trainer.compile=false" in str(err.value)
    finally:
        cpp_compiler_search.cache_clear()
    problems = TrainerConfig.check(TrainerConfig(compile=True, strategy="fsdp"))
    assert problems == ["compile=true is not supported with strategy=fsdp (the sharded LM's hooks are untested under "
                        "torch.compile); use strategy=ddp or compile=false"]


@pytest.mark.parametrize("distributed", [False, True])
def test_training_forward_compiles_as_one_graph(tiny_gpt2, distributed):
    """fullgraph=True: no graph break anywhere in the training forward (encoder, mapper, LM, loss), with float
    images (whose finiteness the host checks outside the graph) and the global target count as an int (one
    process) or as the device tensor a distributed step all-reduces."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32).train()
    g = torch.Generator().manual_seed(0)
    images, ids = torch.rand(3, 3, 32, 32, generator=g), torch.randint(0, 300, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    count = torch.tensor(int((labels != -100).sum())) if distributed else int((labels != -100).sum())
    eager = model(images, ids, mask, labels=labels, num_items_in_batch=count).loss
    forward = torch.compile(model.forward, fullgraph=True, dynamic=True, backend="eager")  # dynamo only: fast
    loss = forward(images, ids, mask, labels=labels, num_items_in_batch=count).loss
    loss.backward()
    torch._dynamo.reset()
    torch.testing.assert_close(loss, eager)
    assert all(p.grad is not None for p in model.mapper.parameters())


def test_compiled_model_still_refuses_nonfinite_images(tiny_gpt2):
    """The value check left the graph, not the model: a compiled model refuses NaN images in one line."""
    from frozen.errors import InputError

    torch._dynamo.reset()
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32)
    model.compile(backend="eager", dynamic=True)
    images = torch.rand(2, 3, 32, 32)
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match=r"images \[1\] hold NaN"):
        model(images, torch.randint(0, 300, (2, 5)))
    torch._dynamo.reset()
