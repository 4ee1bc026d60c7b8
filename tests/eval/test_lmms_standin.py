"""The registered lmms-eval model (frozen.eval.lmms_model) in any environment: where lmms-eval is not installed
(.venv), its request, result and base-model types are replaced by stand-ins with the same fields, so the
model's answers are checked everywhere, not only in .venv-lmms: the sign of its log-likelihoods (lmms-eval
picks the choice of *smallest* value) and its ``until`` stop lists."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from frozen.core.tiny import script_lm
from frozen.eval.lmms import interleave, loglikelihoods

HAS_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None


def _standin_modules() -> dict[str, types.ModuleType]:
    """lmms_eval.api.instance / api.model / models.registry_v2 of lmms-eval 0.7.3 (the version make lmms-eval
    installs), as much of them as the model uses, with the same fields."""

    @dataclass
    class Instance:  # lmms_eval.api.instance.Instance: a request; the model reads .args
        request_type: str
        arguments: tuple
        idx: int
        metadata: dict = field(default_factory=dict)  # {"task": ..., "doc_id": ..., "repeats": ...}

        def __post_init__(self) -> None:
            self.task_name, self.doc_id, self.repeats = (self.metadata["task"], self.metadata["doc_id"],
                                                         self.metadata["repeats"])

        @property
        def args(self) -> tuple:
            return self.arguments if isinstance(self.arguments, tuple) else (self.arguments,)

    @dataclass
    class GenerationResult:  # the evaluator hands .text on unchanged (any other response is str()-ed)
        text: Any
        token_counts: Any = None

    class lmms:  # lmms_eval.api.model.lmms: the base class
        is_simple = True

        def __init__(self) -> None:
            self._rank, self._world_size = 0, 1
            self.task_dict: dict = {}

    @dataclass(frozen=True)
    class ModelManifest:
        model_id: str
        simple_class_path: str | None = None
        chat_class_path: str | None = None

    names = {"lmms_eval": {}, "lmms_eval.api": {}, "lmms_eval.models": {},
             "lmms_eval.api.instance": {"Instance": Instance, "GenerationResult": GenerationResult},
             "lmms_eval.api.model": {"lmms": lmms},
             "lmms_eval.models.registry_v2": {"ModelManifest": ModelManifest}}
    modules = {}
    for name, attrs in names.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        modules[name] = module
    return modules


@pytest.fixture
def lmms_model(monkeypatch):
    """frozen.eval.lmms_model imported against the real lmms-eval where installed, else the stand-ins."""
    if not HAS_LMMS_EVAL:
        for name, module in _standin_modules().items():
            monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "frozen.eval.lmms_model", raising=False)
    module = importlib.import_module("frozen.eval.lmms_model")
    yield module
    sys.modules.pop("frozen.eval.lmms_model", None)  # imported against stand-ins: not for other tests


@pytest.fixture(scope="module")
def export(tmp_path_factory, tiny_gpt2):
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32)
    return model.save_pretrained(tmp_path_factory.mktemp("export") / "export")


def _request(module, args, kind="loglikelihood"):
    from lmms_eval.api.instance import Instance

    return Instance(request_type=kind, arguments=args, idx=0, metadata={"task": "t", "doc_id": 0, "repeats": 1})


def test_loglikelihood_is_negative_so_lmms_evals_argmin_picks_the_likeliest(lmms_model, export):
    """lmms-eval scores multiple choice with np.argmin over the model's values: the value must be -log p."""
    model = lmms_model.FrozenLMMS(pretrained=str(export), device="cpu", batch_size=2)
    image = torch.rand(3, 32, 32)
    choices = [" red", " blue", " circle", " yes", " no"]
    docs = {0: {"image": image}}
    model.task_dict = {"t": {"test": docs}}
    requests = [_request(lmms_model, ("Q: what color? A:", c, lambda doc: [doc["image"]], 0, "t", "test"))
                for c in choices]
    results = model.loglikelihood(requests)
    values = [r.text[0] for r in results]
    expected = loglikelihoods(model.model, [(interleave("Q: what color? A:", [image]), c) for c in choices])
    assert values == pytest.approx([-ll for ll, _ in expected], abs=1e-5)
    assert all(v > 0 for v in values)  # a negative log-probability
    assert [r.text[1] for r in results] == [g for _, g in expected]
    likeliest = max(range(len(choices)), key=lambda i: expected[i][0])
    assert min(range(len(values)), key=values.__getitem__) == likeliest  # lmms-eval's argmin
    # a continuation given as a function of the doc, and an unconditional (two-argument) request
    (by_doc,) = model.loglikelihood([_request(lmms_model, ("Q: what color? A:", lambda doc: " red",
                                                           lambda doc: [doc["image"]], 0, "t", "test"))])
    assert by_doc.text[0] == pytest.approx(values[0], abs=1e-5)
    (plain,) = model.loglikelihood([_request(lmms_model, ("", " red"))])
    assert plain.text[0] == pytest.approx(-loglikelihoods(model.model, [(interleave("", []), " red")])[0][0],
                                          abs=1e-5)


def test_generate_until_cuts_at_the_earliest_of_the_until_strings(lmms_model, export):
    model = lmms_model.FrozenLMMS(pretrained=str(export), device="cpu", batch_size=2)
    model.task_dict = {"t": {"test": {0: {"image": torch.rand(3, 32, 32)}}}}
    handles = script_lm(model.model, "red. blue\nQ")
    try:
        visual = lambda doc: [doc["image"]]  # noqa: E731
        requests = [_request(lmms_model, ("Q: what color? A:", {"until": ["\n", "."], "max_new_tokens": 12},
                                          visual, 0, "t", "test"), "generate_until"),
                    _request(lmms_model, ("Q: and? A:", {"until": ["\n"], "max_new_tokens": 12}, visual, 0, "t",
                                          "test"), "generate_until"),
                    _request(lmms_model, ("Q: now? A:", {"until": "Q", "max_new_tokens": 12}, visual, 0, "t", "test"),
                             "generate_until")]
        assert model.generate_until(requests) == ["red", "red. blue", "red. blue"]
    finally:
        for h in handles:
            h.remove()


def test_unknown_model_args_and_precision_are_one_line_errors(lmms_model, export):
    from frozen.errors import InputError

    with pytest.raises(InputError, match=r"^unknown --model_args for frozen: colour, size; use pretrained=PATH"):
        lmms_model.FrozenLMMS(pretrained=str(export), size=1, colour=2)
    with pytest.raises(InputError, match="^precision must be fp32 or bf16, got 'fp16'$"):
        lmms_model.FrozenLMMS(pretrained=str(export), precision="fp16")
    manifest = lmms_model.manifest()
    assert (manifest.model_id, manifest.simple_class_path) == ("frozen", "frozen.eval.lmms_model.FrozenLMMS")
