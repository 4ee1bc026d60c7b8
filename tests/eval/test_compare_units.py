"""make compare and the recorded protocol on hand-written run folders (seconds; test_compare.py runs real
trainings and evaluations): the evaluation's own settings as columns, max_examples and the other protocol
fields flagged, intervals of every accuracy-like cell (strict match included), and the readers' errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from frozen.errors import InputError
from frozen.eval.compare import (
    Run,
    cell_key,
    flatten,
    interval,
    is_noise,
    job_folders,
    load_run,
    load_runs,
    model_config,
    read_json,
    training_config,
    varying,
)
from frozen.eval.compare_report import cell_text, compare, flags
from frozen.eval.protocol import NOT_RECORDED, VQA_REVISION, metric_revisions, protocols, task_protocol
from frozen.eval.stats import wilson_interval

VQA_TASK = {"kind": "vqa", "shards": "vqa/vqa-test-*.tar", "shots": [0], "prompt": "Q: {question} A:",
            "conditions": ["image", "no_image"], "num_trials": 1, "max_new_tokens": 4, "max_examples": None}
ROWS = [{"task": "vqa", "metric": "vqa_accuracy", "condition": "image", "shots": 0, "mean": 0.5, "stddev": 0.0,
         "num_examples": 40, "num_trials": 1},
        {"task": "binding", "metric": "accuracy_strict", "condition": "image", "ways": 2, "inner_shots": 1,
         "repeats": 0, "task_induction": False, "mean": 0.25, "stddev": 0.0, "num_examples": 64, "num_trials": 1}]


def eval_config(**top) -> dict:
    """An evaluation run's config as results.json stores it (EvaluateConfig as a dict)."""
    config = {"eval": {"name": "tiny", "tasks": {"vqa": dict(VQA_TASK)}}, "load_path": None, "data_root": "data",
              "batch_size": 16, "seed": 0, "device": "cpu", "precision": "fp32", "num_gpus": 1, "run_dir": None,
              "max_examples": None, "tasks": None, "blind_model_sees_black_images": True}
    return config | top


def write_eval_run(folder: Path, rows=ROWS, with_protocol=True, **top) -> Path:
    config = eval_config(**top)
    folder.mkdir(parents=True)
    data = {"config": config, "rows": rows}
    if with_protocol:
        data["protocol"] = protocols(config)
    (folder / "results.json").write_text(json.dumps(data))
    return folder


# --------------------------------------------------------------------------------------------- protocol


def test_max_examples_of_evaluate_is_part_of_every_tasks_protocol():
    small, large = protocols(eval_config(max_examples=50)), protocols(eval_config(max_examples=1000))
    assert small["vqa"]["max_examples"] == 50 and large["vqa"]["max_examples"] == 1000
    assert protocols(eval_config())["vqa"]["max_examples"] is None  # the task's own (None: all questions)


def test_protocol_fields():
    config = eval_config()
    config["eval"]["tasks"]["caps"] = {"kind": "caption", "shards": "c", "conditions": ["image"]}
    config["eval"]["tasks"]["bind"] = {"kind": "binding", "ways": 2, "conditions": ["image"]}
    got = protocols(config)
    assert got["vqa"] == {"preset": "tiny", **{k: v for k, v in VQA_TASK.items() if k != "conditions"},
                          "metric_revision": {"vqa_accuracy": f"vqaEval.py {VQA_REVISION}"}}
    assert VQA_REVISION == "a013f00"
    assert got["caps"]["metric_revision"]["BLEU/CIDEr"].startswith("pycocoevalcap ")
    assert got["caps"]["metric_revision"]["BLEU/CIDEr"] != "pycocoevalcap (not installed)"
    assert got["bind"]["metric_revision"] == {"accuracy": "exact match after normalisation"}
    assert metric_revisions("deepmind") == metric_revisions("binding")
    assert {t: p["metric_revision"] for t, p in protocols(config, recorded=False).items()} == dict.fromkeys(
        ("vqa", "caps", "bind"), NOT_RECORDED)
    assert list(protocols(config | {"tasks": ["caps"]})) == ["caps"]  # evaluate.py tasks=[...]: only those ran
    assert list(protocols(config | {"tasks": []})) == ["vqa", "caps", "bind"]
    assert protocols({}) == {} and protocols({"eval": {}}) == {}  # a config without tasks: no protocols
    assert task_protocol({"kind": "vqa"}, {}, None) == {"preset": None, "kind": "vqa",
                                                        "metric_revision": NOT_RECORDED}


def test_pycocoevalcap_missing_is_named(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert metric_revisions("caption") == {"BLEU/CIDEr": "pycocoevalcap (not installed)"}


# ------------------------------------------------------------------------------------- make compare


def test_runs_that_differ_only_in_max_examples_are_flagged(tmp_path):
    a = write_eval_run(tmp_path / "a", max_examples=50)
    b = write_eval_run(tmp_path / "b", max_examples=1000)
    done = compare([a, b], tmp_path / "out")
    assert done["flags"] == ["⚠ vqa: max_examples differs: 50 (a) vs 1000 (b)"]
    assert done["flags"][0] in done["markdown"].read_text()
    assert done["keys"] == []  # not a config column: the flag says it
    assert flags(load_runs([a, write_eval_run(tmp_path / "c")])) == ["⚠ vqa: max_examples differs: 50 (a) vs null (c)"]


@pytest.mark.parametrize("key, values", [("precision", ("fp32", "bf16")), ("seed", (0, 1)),
                                         ("blind_model_sees_black_images", (True, False))])
def test_the_evaluations_own_settings_are_columns_when_they_differ(tmp_path, key, values):
    """A bf16 and an fp32 evaluation of one model: the runs table shows why their numbers differ."""
    a = write_eval_run(tmp_path / "a", **{key: values[0]})
    b = write_eval_run(tmp_path / "b", **{key: values[1]})
    done = compare([a, b], tmp_path / "out")
    assert done["keys"] == [f"eval:{key}"] and done["flags"] == []
    runs_table = done["markdown"].read_text().split("## Runs", 1)[1]
    assert f"| run | folder | eval:{key} |" in runs_table
    for label, value in zip("ab", values):
        assert f"| {label} | {tmp_path / label} | {json.dumps(value) if not isinstance(value, str) else value} |" \
            in runs_table


def test_noise_keys_are_not_columns():
    assert is_noise("run_dir") and is_noise("logger.backend") and is_noise("eval:device") and is_noise("tasks")
    assert is_noise("max_examples") and is_noise("eval:batch_size")
    assert not is_noise("eval:precision") and not is_noise("eval:seed") and not is_noise("trainer.lr")
    assert not is_noise("logger") and not is_noise("run_dir.x") and not is_noise("seed")
    runs = [Run("a", Path("a"), {"run_dir": "x", "z": [1, 2], "trainer.lr": 1e-3, "seed": 0, "lm.name": "gpt2",
                                 "only_a": 1, "model.num_prefix_tokens": 2, "a.b": 1}),
            Run("b", Path("b"), {"run_dir": "y", "z": [1, 3], "trainer.lr": 1e-2, "seed": 1, "lm.name": "opt",
                                 "model.num_prefix_tokens": 2, "a.b": 2})]
    # FIRST order (lm.name, seed, trainer.lr), then order of appearance; a key one run lacks does not vary
    assert varying(runs) == ["lm.name", "seed", "trainer.lr", "z", "a.b"]
    assert varying(runs[:1]) == []


def test_strict_match_rows_carry_their_wilson_interval(tmp_path):
    strict = ROWS[1]
    assert interval(strict) == wilson_interval(0.25, 64)
    lo, hi = wilson_interval(0.25, 64)
    assert cell_text(strict) == f"0.250 [{lo:.3f}, {hi:.3f}]"
    done = compare([write_eval_run(tmp_path / "a"), write_eval_run(tmp_path / "b", seed=1)], tmp_path / "out")
    line = next(x for x in done["markdown"].read_text().splitlines() if "accuracy_strict" in x)
    assert line.count(f"0.250 [{lo:.3f}, {hi:.3f}]") == 2


def test_interval_kinds():
    assert interval(None) is None and interval({"metric": "accuracy", "mean": None}) is None
    assert interval({"metric": "CIDEr", "mean": 0.5, "num_examples": 10}) is None
    assert interval({"metric": "accuracy", "mean": 1.5, "num_examples": 10}) is None  # not a proportion
    assert interval({"metric": "accuracy", "mean": -0.1, "num_examples": 10}) is None
    assert interval({"metric": "accuracy", "mean": 0.5, "num_examples": 0}) is None
    assert interval({"metric": "CIDEr", "mean": 0.5, "ci95": [0.1, 0.9]}) == (0.1, 0.9)
    # a t interval over validation batches: 3 batches -> 2 dof -> t = 4.303
    losses = [1.0, 2.0, 3.0]
    lo, hi = interval({"metric": "loss", "mean": 2.0, "batch_losses": losses})
    assert (lo, hi) == pytest.approx((2.0 - 4.303 / math.sqrt(3), 2.0 + 4.303 / math.sqrt(3)))
    many = [1.0, 2.0] * 6  # 11 dof: past the table, 1.96 + 2.4 / dof
    lo, hi = interval({"metric": "loss", "mean": 1.5, "batch_losses": many})
    sd = math.sqrt(sum((x - 1.5) ** 2 for x in many) / 11)
    assert hi - 1.5 == pytest.approx((1.96 + 2.4 / 11) * sd / math.sqrt(12))
    ten = [1.0, 2.0] * 5 + [1.5]  # 10 dof: the table's last entry
    mean = sum(ten) / 11
    sd = math.sqrt(sum((x - mean) ** 2 for x in ten) / 10)
    assert interval({"metric": "loss", "mean": mean, "batch_losses": ten})[1] - mean == pytest.approx(
        2.228 * sd / math.sqrt(11))
    assert interval({"metric": "loss", "mean": 2.0, "batch_losses": [2.0]}) is None
    lo, hi = interval({"metric": "loss", "mean": 2.0, "batch_losses": [1.0, 3.0]})  # 1 dof: t = 12.706
    assert hi - 2.0 == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2))
    for mean in (0.0, 1.0):  # the ends of a proportion get their Wilson interval too
        assert interval({"metric": "accuracy", "mean": mean, "num_examples": 16}) == wilson_interval(mean, 16)


def test_cells_and_flattening():
    assert flatten({"trainer": {"lr": 1e-4, "betas": [0.9, 0.99]}, "seed": 0}) == {
        "trainer.lr": 1e-4, "trainer.betas": [0.9, 0.99], "seed": 0}
    assert flatten(3) == {"": 3}
    assert cell_key({"task": "validation", "metric": "loss", "shots": 4}) == (
        "validation", "image", "last validation", "loss")
    assert cell_key({"task": "vqa", "metric": "m", "shots": 4, "condition": "no_image"}) == (
        "vqa", "no_image", "4-shot", "m")


def test_readers_say_what_is_wrong_in_one_line(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match=r"^cannot read .*bad.json: .*; rerun the run that writes it"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "norows.json").write_text('{"rows": 3}')
    with pytest.raises(InputError, match=r'norows.json has no "rows" list'):
        read_json(tmp_path / "norows.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match=r'list.json has no "rows" list'):
        read_json(tmp_path / "list.json")
    with pytest.raises(InputError, match="no such folder"):
        load_run(tmp_path / "missing", "m")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError) as info:
        load_run(tmp_path / "plain", "p")
    assert str(info.value) == (f"{tmp_path / 'plain'} is not a run: it has no results.json, validation.json or "
                               ".hydra/config.yaml; pass a training or evaluation run folder or a Hydra multirun "
                               "folder (multirun/NAME/DATE_TIME)")
    hydra_only = tmp_path / "hydra_only"
    (hydra_only / ".hydra").mkdir(parents=True)
    (hydra_only / ".hydra" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(InputError, match=r"is a run without results \(no results.json, no validation.json\)"):
        load_run(hydra_only, "h")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    (sweep / "notes").mkdir()
    with pytest.raises(InputError, match="has multirun.yaml but no job folders .*: the sweep did not start its jobs; "
                                         "run it again$"):
        job_folders(sweep)
    for name in ("10_lr=2", "2_lr=1", "x_y"):
        (sweep / name).mkdir()
    assert [p.name for p in job_folders(sweep)] == ["2_lr=1", "10_lr=2"]
    with pytest.raises(InputError, match='^no runs to compare: make compare RUNS="outputs/run_a outputs/run_b" '
                                         r'\(or a multirun folder\)$'):
        load_runs([])
    two_models = tmp_path / "summary"
    two_models.mkdir()
    rows = [dict(ROWS[0], model="m1"), dict(ROWS[0], model="m2")]
    (two_models / "results.json").write_text(json.dumps({"rows": rows}))
    with pytest.raises(InputError, match=r"holds the rows of 2 models \(m1, m2: make demo's summary\); pass each "
                                         rf"model's evaluation folder instead, e.g. {two_models / 'eval' / 'm1'}"):
        load_run(two_models, "s")


def write_training_run(folder: Path, lr: float, choices: dict | None = None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"trainer": {"lr": lr}, "model": {"num_prefix_tokens": 2}, "lm": {"name": "tiny"}, "seed": 0}))
    if choices is not None:
        (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    return folder


def test_an_evaluation_takes_the_config_of_the_model_it_loaded(tmp_path):
    train = write_training_run(tmp_path / "train", 1e-3, {"lm": "tiny_preset", "hydra/launcher": "basic",
                                                           "logger": "wandb", "experiment": "debug"})
    assert training_config(train) == {"lm": "tiny_preset", "experiment": "debug", "trainer.lr": 1e-3,
                                      "model.num_prefix_tokens": 2, "lm.name": "tiny", "seed": 0}
    assert training_config(tmp_path) is None
    for hydra in ("", "hydra: {}\n", "hydra: {runtime: {}}\n", "hydra: {runtime: {choices: null}}\n"):
        (train / ".hydra" / "hydra.yaml").write_text(hydra)  # no preset choices recorded: the config alone
        assert training_config(train)["trainer.lr"] == 1e-3 and "experiment" not in training_config(train)
    (tmp_path / "evalrun" / ".hydra").mkdir(parents=True)
    (tmp_path / "evalrun" / ".hydra" / "config.yaml").write_text("seed: 0\nprecision: fp32\n")
    assert training_config(tmp_path / "evalrun") is None  # an evaluation's own saved config has no trainer
    (train / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"lm": "x"}}}}))
    assert model_config(str(train), None)["trainer.lr"] == 1e-3
    assert model_config(str(train / "export"), None)["trainer.lr"] == 1e-3  # the run of an export inside it
    assert model_config(None, str(train / "ckpt.pt"))["trainer.lr"] == 1e-3
    export = tmp_path / "exp"
    export.mkdir()
    (export / "frozen_config.json").write_text(json.dumps({"model": {"k": 1}, "lm": {"name": "x"}, "other": 3}))
    assert model_config(str(export), None) == {"model.k": 1, "lm.name": "x"}
    assert model_config(str(tmp_path), None) == {}
    (tmp_path / "x" / "export").mkdir(parents=True)
    (tmp_path / "x" / "export" / "frozen_config.json").write_text(json.dumps({"model": {"k": 2}}))
    assert model_config("", str(tmp_path / "x")) == {"model.k": 2}
    # an evaluation run: the model's training config, then its own settings, then the LM size
    run = load_run(write_eval_run(tmp_path / "e", load_path=str(train), seed=3), "e")
    assert run.config["trainer.lr"] == 1e-3 and run.config["eval:seed"] == 3 and run.config["eval:precision"] == "fp32"
    assert "lm_num_parameters" not in run.config
    # a results.json that names the checkpoint it evaluated (no load_path): that run's config
    checkpointed = write_eval_run(tmp_path / "c", rows=[dict(ROWS[0], model="frozen")])
    data = json.loads((checkpointed / "results.json").read_text()) | {"checkpoint": str(train / "ckpt.pt")}
    (checkpointed / "results.json").write_text(json.dumps(data))
    run = load_run(checkpointed, "c")  # one model's rows: an evaluation folder, not a summary
    assert run.config["trainer.lr"] == 1e-3 and run.protocol["vqa"]["metric_revision"] != NOT_RECORDED


def test_validation_without_protocol_or_lm_size(tmp_path):
    folder = write_training_run(tmp_path / "run", 1e-2)
    (folder / "validation.json").write_text(json.dumps({"rows": [{"task": "validation", "metric": "loss",
                                                                  "mean": 2.0}]}))
    run = load_run(folder, "r")
    assert run.protocol == {} and "lm_num_parameters" not in run.config and run.config["trainer.lr"] == 1e-2


def test_validation_and_results_in_one_folder(tmp_path):
    folder = write_training_run(tmp_path / "run", 1e-2)
    (folder / "validation.json").write_text(json.dumps({
        "rows": [{"task": "validation", "metric": "loss", "mean": 2.0, "batch_losses": [1.0, 3.0]}],
        "protocol": {"validation": {"batches": 3}}, "lm_num_parameters": 1234}))
    run = load_run(folder, "r")
    assert run.config["lm_num_parameters"] == 1234 and run.config["trainer.lr"] == 1e-2
    assert run.protocol == {"validation": {"batches": 3}} and len(run.rows) == 1
    data = {"config": eval_config(), "rows": ROWS, "lm_num_parameters": 99}
    (folder / "results.json").write_text(json.dumps(data))
    run = load_run(folder, "r")
    assert set(run.protocol) == {"validation", "vqa"}
    assert run.config["lm_num_parameters"] == 99 and len(run.rows) == 3
    assert run.protocol["vqa"]["metric_revision"] == NOT_RECORDED  # no recorded protocol: rebuilt, revision unknown
    assert set(run.cells()) == {("validation", "image", "last validation", "loss"),
                                ("vqa", "image", "0-shot", "vqa_accuracy"),
                                ("binding", "image", "2-way 1 inner shot", "accuracy_strict")}


def test_run_labels_name_the_first_part_that_differs(tmp_path, monkeypatch):
    results = json.dumps({"rows": ROWS[:1]})

    def run(path: Path) -> Path:
        path.mkdir(parents=True)
        (path / "results.json").write_text(results)
        return path

    def sweep(path: Path) -> Path:
        run(path / "0_lr=1")
        (path / "multirun.yaml").write_text("{}\n")
        return path

    # one folder between the differing part and the label: "base/…/frozen"; none: "x/frozen"
    one = [run(tmp_path / "base" / "eval" / "frozen"), run(tmp_path / "after" / "eval" / "frozen")]
    none = [run(tmp_path / "x" / "frozen"), run(tmp_path / "y" / "frozen")]
    assert [r.label for r in load_runs(one + none)] == ["base/…/frozen", "after/…/frozen", "x/frozen", "y/frozen"]
    # a run inside another of the same name: the outer one keeps its name
    nested = [run(tmp_path / "n" / "frozen" / "frozen"), tmp_path / "n" / "frozen"]
    (nested[1] / "results.json").write_text(results)
    assert [r.label for r in load_runs(nested)] == ["frozen/frozen", "frozen"]
    # multirun jobs: the sweep folder that differs, with "/…" when a folder lies between it and the sweep's own
    sweeps = [sweep(tmp_path / "s" / "X" / "sub"), sweep(tmp_path / "s" / "Y" / "sub")]
    assert [r.label for r in load_runs(sweeps)] == ["X/…#0", "Y/…#0"]
    monkeypatch.chdir(one[0])
    assert [r.label for r in load_runs(["."])] == ["."]  # a folder given as "." is labelled as given
