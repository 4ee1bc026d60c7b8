"""FrozenModel behaviour on tiny offline LMs: loss, freezing, save/load, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from frozen import FrozenModel
from frozen.errors import FrozenConfigError, InputError, LMNotFoundError


def _batch(model, b=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.model_cfg.image_size
    images = torch.rand(b, 3, s, s, generator=g)
    ids = torch.randint(1, len(model.tokenizer), (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 4:] = 0  # right padding on one row
    ids[1, 4:] = model.tokenizer.pad_token_id
    return images, ids, mask


@pytest.mark.parametrize("kind", ["gpt2", "llama", "opt"])
def test_loss_matches_hand_computation(tiny_lm_dirs, kind):
    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_lm_dirs[kind]), vision="tiny_cnn", image_size=32, num_prefix_tokens=3)
    images, ids, mask = _batch(model)
    out = model(images, ids, mask)

    # By hand: embed, cat, run the LM without labels, shift, and average CE over real text tokens.
    prefix = model.mapper(model.vision(images))  # [B, k, D]
    assert prefix.shape == (3, 3, model.lm.get_input_embeddings().embedding_dim)
    embeds = torch.cat([prefix, model.lm.get_input_embeddings()(ids)], 1)
    full_mask = torch.cat([torch.ones(3, 3, dtype=torch.long), mask], 1)
    logits = model.lm(inputs_embeds=embeds, attention_mask=full_mask).logits  # [B, k+T, V]
    text_logits = logits[:, 3 - 1 : -1]  # position k-1 predicts the first text token
    ce = F.cross_entropy(text_logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none")
    expected = (ce * mask.reshape(-1)).sum() / mask.sum()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (3, 3 + 6, len(model.tokenizer))
    # The same through the HF labels path the issue names: lm(inputs_embeds=..., labels=...).
    labels = torch.cat([torch.full((3, 3), -100), ids.masked_fill(mask == 0, -100)], 1)
    ref = model.lm(inputs_embeds=embeds, attention_mask=full_mask, labels=labels).loss
    torch.testing.assert_close(out.loss, ref)


def test_eos_is_a_target_even_when_pad_equals_eos(tiny_model):
    tok = tiny_model.tokenizer
    assert tok.pad_token_id == tok.eos_token_id  # GPT-2-like: no pad token of its own
    images, _, _ = _batch(tiny_model, b=2)
    eos = tok.eos_token_id
    ids = torch.tensor([[5, 6, 7, eos], [5, 6, eos, eos]])  # second row: caption+EOS, then one pad
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    out = tiny_model(images, ids, mask)
    logits = out.logits[:, 1:-1]  # k=2: positions 1..4 predict tokens 0..3
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none").view(2, 4)
    expected = (ce[0].sum() + ce[1, :3].sum()) / 7  # the first EOS of row 2 counts, its pad does not
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)


def test_lm_is_frozen_and_untouched_by_training(tiny_model):
    model = tiny_model.train()
    assert not model.lm.training, "a frozen LM must stay in eval mode when the model trains"
    assert model.vision.training and model.mapper.training
    assert all(not p.requires_grad for p in model.lm.parameters())
    lm_before = {n: p.detach().clone() for n, p in model.lm.named_parameters()}
    other_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("lm.")}
    trainable = model.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for n, p in model.named_parameters() if not n.startswith("lm.")}
    opt = torch.optim.Adam(trainable, lr=1e-2)
    for step in range(3):
        images, ids, mask = _batch(model, seed=step)
        loss = model(images, ids, mask).loss
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.lm.parameters()), "the LM must get no weight gradients"
        opt.step()
    for n, p in model.lm.named_parameters():
        assert torch.equal(p, lm_before[n]), f"LM parameter {n} changed"
    changed = [
        n for n, p in model.named_parameters() if not n.startswith("lm.") and not torch.equal(p, other_before[n])
    ]
    assert any(n.startswith("vision.") for n in changed) and any(n.startswith("mapper.") for n in changed)


def test_save_load_round_trip(tiny_model, tmp_path):
    model = tiny_model.eval()
    with torch.no_grad():
        for p in model.mapper.parameters():
            p.add_(0.1)  # make the weights differ from a fresh init
    images, ids, mask = _batch(model)
    before = model(images, ids, mask).logits
    out_dir = model.save_pretrained(tmp_path / "export")
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "README.md",
        "frozen_config.json",
        "model.safetensors",
    ]  # README.md: the model card
    from safetensors import safe_open

    with safe_open(str(out_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith(("vision.", "mapper.")) for k in keys), "only trainable weights are exported"
    config = json.loads((out_dir / "frozen_config.json").read_text())
    assert config["lm"]["name"] == model.lm_cfg.name and config["model"]["vision"] == "tiny_cnn"
    restored = FrozenModel.from_pretrained(out_dir).eval()
    torch.testing.assert_close(restored(images, ids, mask).logits, before, rtol=0, atol=0)


def test_finetuned_lm_ablation_trains_and_saves_the_lm(tiny_gpt2, tmp_path):
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32, lm_trainable=True)
    assert all(p.requires_grad for p in model.lm.parameters())
    model.save_pretrained(tmp_path / "ft")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ft" / "model.safetensors"), "pt") as f:
        assert any(k.startswith("lm.") for k in f.keys())


def test_bf16_lm(tiny_gpt2):
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32, lm_dtype="bfloat16")
    assert model.lm.get_input_embeddings().weight.dtype == torch.bfloat16
    images, ids, mask = _batch(model)
    out = model(images, ids, mask)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.mapper.proj.weight.grad is not None and model.mapper.proj.weight.dtype == torch.float32


def test_readme_call_signature(tiny_model):
    """The original README's `output = frozen(img, tokens)`: no mask needed."""
    images, ids, _ = _batch(tiny_model)
    output = tiny_model(images, ids)
    assert output.loss.ndim == 0 and output.logits.shape[:2] == (3, 2 + 6)


# ----------------------------------------------------------------------------- errors
def test_unknown_backbone_lists_known_names(tiny_gpt2):
    with pytest.raises(FrozenConfigError, match="unknown vision backbone 'vit'.*nf_resnet50.*tiny_cnn"):
        FrozenModel.from_pretrained(str(tiny_gpt2), vision="vit")


def test_bad_prefix_token_count(tiny_gpt2):
    with pytest.raises(FrozenConfigError, match="num_prefix_tokens must be >= 1"):
        FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", num_prefix_tokens=0)


def test_unknown_override(tiny_gpt2):
    with pytest.raises(FrozenConfigError, match="unknown override 'prefix'.*num_prefix_tokens"):
        FrozenModel.from_pretrained(str(tiny_gpt2), prefix=2)


def test_missing_local_lm_path(tmp_path):
    with pytest.raises(LMNotFoundError, match="does not exist"):
        FrozenModel.from_pretrained(str(tmp_path / "nope" / "lm"), vision="tiny_cnn")


def test_hub_lm_offline_says_it_needs_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(LMNotFoundError, match="needs the network.*local path.*gpt2"):
        FrozenModel.from_pretrained("not-a-cached-org/not-a-cached-lm", vision="tiny_cnn")


def test_wrong_image_shape(tiny_model):
    _, ids, _ = _batch(tiny_model)
    with pytest.raises(ValueError, match=r"images must be a float tensor \[B, 3, 32, 32\].*got \(3, 3, 64, 64\)"):
        tiny_model(torch.rand(3, 3, 64, 64), ids)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "opt"])
def test_activation_checkpointing_recomputes_layers_and_keeps_gradients(tiny_lm_dirs, kind):
    """Each decoder layer runs twice per step (forward + recompute in backward), gradients unchanged."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    def grads_and_calls(checkpointing: bool):
        torch.manual_seed(0)
        model = FrozenModel.from_pretrained(str(tiny_lm_dirs[kind]), vision="tiny_cnn", image_size=32)
        model.train()
        layers = [m for m in model.lm.modules() if isinstance(m, GradientCheckpointingLayer)]
        calls = []
        # A hook on each layer's first child: it fires whenever the layer's body runs, recompute included.
        for layer in layers:
            next(layer.children()).register_forward_hook(lambda *_: calls.append(1))
        if checkpointing:
            assert model.enable_activation_checkpointing() == len(layers)
        assert not model.lm.training, "the frozen LM stays in eval mode (no dropout)"
        model(*_batch(model)).loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():  # no recompute and no checkpoint overhead without autograd
            before = len(calls)
            model(*_batch(model))
            assert len(calls) - before == len(layers)
        return grads, before, len(layers)

    plain, plain_calls, n = grads_and_calls(False)
    ckpt, ckpt_calls, _ = grads_and_calls(True)
    assert plain_calls == n and ckpt_calls == 2 * n
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6)


def test_activation_checkpointing_can_be_switched_off(tiny_model):
    layer_cls = type(tiny_model.lm.transformer.h[0])
    n = tiny_model.enable_activation_checkpointing()
    assert n == 2 and all("forward" in vars(layer) for layer in tiny_model.lm.transformer.h)
    assert tiny_model.enable_activation_checkpointing() == n  # idempotent: wrapped once
    assert tiny_model.lm.transformer.h[0].forward.args[0].__func__ is layer_cls.forward
    tiny_model.enable_activation_checkpointing(False)
    assert not any("forward" in vars(layer) for layer in tiny_model.lm.transformer.h)


def test_from_pretrained_accepts_a_training_run_directory(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "run" / "export")
    restored = FrozenModel.from_pretrained(tmp_path / "run")
    for name, tensor in tiny_model.trainable_state_dict().items():
        assert torch.equal(restored.trainable_state_dict()[name], tensor)


def test_uint8_pixels_give_the_same_loss_and_gradients_as_float(tiny_model):
    """The training loader ships uint8 pixels; encode_images turns them into exactly the float32 values
    image_transform would have made, so loss and encoder/mapper gradients are bit-identical."""
    from PIL import Image

    from frozen.model.vision import image_transform, to_unit_float

    s = tiny_model.model_cfg.image_size
    g = torch.Generator().manual_seed(1)
    photos = [Image.fromarray(torch.randint(0, 256, (20 + 7 * i, 30, 3), generator=g, dtype=torch.uint8).numpy())
              for i in range(3)]
    as_float, as_uint8 = image_transform(s), image_transform(s, torch.uint8)
    floats = torch.stack([as_float(p) for p in photos])
    pixels = torch.stack([as_uint8(p) for p in photos])
    assert pixels.dtype == torch.uint8 and floats.dtype == torch.float32
    assert torch.equal(to_unit_float(pixels), floats) and to_unit_float(floats) is floats
    _, ids, mask = _batch(tiny_model)
    tiny_model.train()
    results = []
    for images in (floats, pixels):
        tiny_model.zero_grad(set_to_none=True)
        loss = tiny_model(images, ids, mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in tiny_model.trainable_parameters()]))
    (loss_f, grads_f), (loss_u, grads_u) = results
    assert torch.equal(loss_f, loss_u) and all(torch.equal(a, b) for a, b in zip(grads_f, grads_u))
    # generation takes uint8 tensors too, with the same answer as the float ones
    prompts = ["<image>a"] * 3
    assert tiny_model.generate([[im] for im in pixels], prompts, max_new_tokens=3) == \
        tiny_model.generate([[im] for im in floats], prompts, max_new_tokens=3)
    with pytest.raises(InputError, match="floating point in \\[0, 1\\] or uint8 pixels"):
        tiny_model(pixels.to(torch.int32), ids, mask)
    with pytest.raises(ValueError, match="float32 or uint8"):
        image_transform(s, torch.float16)
