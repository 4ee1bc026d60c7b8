"""Inputs refused in one line before any forward: a damaged export, non-finite images, a prompt longer than the LM."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from frozen.cli import error_lines
from frozen.errors import ContextLengthError, FrozenError, InputError
from frozen.model.embedding import context_limit


def _one_line(err: BaseException) -> str:
    assert isinstance(err, FrozenError)
    lines = error_lines(err)
    assert len(lines) == 1 and "\n" not in str(err)
    return lines[0]


# ------------------------------------------------------------------------------------------ damaged export
@pytest.mark.parametrize("keep", [0, 5, 200])
def test_truncated_safetensors_is_one_line_naming_the_file(tiny_model, tmp_path, keep):
    from frozen import FrozenModel

    export = tiny_model.save_pretrained(tmp_path / "export")
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(FrozenError) as info:
        FrozenModel.from_pretrained(export)
    line = _one_line(info.value)
    assert str(weights) in line and "damaged" in line and "copy or save it again" in line


def test_missing_safetensors_is_one_line(tiny_model, tmp_path):
    from frozen import FrozenModel

    export = tiny_model.save_pretrained(tmp_path / "export")
    (export / "model.safetensors").unlink()
    with pytest.raises(FrozenError, match="model.safetensors is not a readable safetensors file"):
        FrozenModel.from_pretrained(export)


# ------------------------------------------------------------------------------------------ non-finite images
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_images_are_refused_before_any_forward(tiny_model, bad):
    from frozen.model.vision import check_images

    images = torch.rand(3, 3, 32, 32)
    images[1, 2, 5, 7] = bad
    with pytest.raises(InputError, match=r"images \[1\] hold NaN or infinite values") as info:
        check_images(images, 32)
    _one_line(info.value)
    calls = []
    tiny_model.lm.register_forward_pre_hook(lambda *a: calls.append(1))
    tiny_model.vision.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match="NaN or infinite"):
        tiny_model.generate([[images[1]]], ["<image>a"], max_new_tokens=2)
    with pytest.raises(InputError, match="NaN or infinite"):
        tiny_model(images, torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(InputError, match="NaN or infinite"):
        tiny_model.generate_shared([images[0]], "<image>a", [[images[1]]], ["<image>b"], max_new_tokens=2)
    assert calls == []
    check_images(images[[0, 2]], 32)  # finite images pass


# ------------------------------------------------------------------------------------------ over-long prompts
def _text_of(tokenizer, n: int) -> str:
    text = " a" * n
    assert len(tokenizer(text, add_special_tokens=False).input_ids) == n
    return text


def test_context_limit_reads_the_lm_config():
    assert context_limit(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048))) == (
        2048, "max_position_embeddings")
    assert context_limit(SimpleNamespace(config=SimpleNamespace(n_positions=1024))) == (1024, "n_positions")
    assert context_limit(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=None))) is None
    assert context_limit(SimpleNamespace(config=SimpleNamespace())) is None


def test_prompt_longer_than_the_context_is_one_line_before_the_lm_runs(tiny_model):
    limit, field = context_limit(tiny_model.lm)
    assert (limit, field) == (256, "n_positions")
    k = tiny_model.num_prefix_tokens
    image = torch.rand(3, 32, 32)
    fits = _text_of(tiny_model.tokenizer, limit - k - 4)  # + k (one image) + 4 new tokens == limit
    assert len(tiny_model.generate([[image]], ["<image>" + fits], max_new_tokens=4)) == 1
    calls = []
    tiny_model.lm.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ContextLengthError) as info:
        tiny_model.generate([[image]], ["<image>" + fits], max_new_tokens=5)
    line = _one_line(info.value)
    assert f"the prompt needs {limit + 1} positions ({limit - k - 4} text tokens + 1 image(s) x k={k} + " \
           f"max_new_tokens=5) but the LM has {limit} (n_positions)" in line
    too_long = _text_of(tiny_model.tokenizer, limit + 10)
    with pytest.raises(ContextLengthError, match=rf"prompt 1 of 2 needs {limit + 12} positions"):
        tiny_model.generate(None, ["short", too_long], max_new_tokens=2, batch_size=1)
    with pytest.raises(ContextLengthError, match=rf"prompt 1 of 2 needs {limit + 10 + 2 * k + 3} positions"):
        tiny_model.generate_shared([image], "<image>" + too_long[: len(too_long) // 2], [[], [image]],
                                   ["x", "<image>" + too_long[len(too_long) // 2:]], max_new_tokens=3)
    assert calls == []


def test_model_without_a_position_limit_is_not_checked(tiny_model, monkeypatch):
    from frozen.model.embedding import check_context
    from frozen.model.prompts import Prompt

    monkeypatch.setattr(tiny_model.lm, "config", SimpleNamespace(model_type="rotary, no limit"))
    long = Prompt.parse(_text_of(tiny_model.tokenizer, 300)).tokenize(tiny_model.tokenizer)
    check_context(tiny_model, [long], 10)  # no limit known: nothing to refuse


def test_app_says_the_prompt_is_too_long(tiny_model):
    from frozen.app import logic as L

    prompt = _text_of(tiny_model.tokenizer, 300)
    with pytest.raises(L.AppInputError, match="the prompt needs 308 positions .* but the LM has 256"):
        L.generate(tiny_model, prompt, [], max_new_tokens=8)
    with pytest.raises(L.AppInputError, match="the prompt needs 300 positions"):
        L.next_token_probs(tiny_model, prompt, [])
