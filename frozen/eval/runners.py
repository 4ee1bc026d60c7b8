"""One plain function per task kind: ``eval_vqa``, ``eval_caption``, ``eval_episodes``.

Each builds its queries (:mod:`frozen.eval.tasks`) for every setting of its grid, asks the
:class:`~frozen.eval.harness.Harness` for answers (generation + gathering), scores them with
:mod:`frozen.eval.metrics` and adds rows. Row settings per kind (results.json):

* vqa: ``shots`` (demonstrations per query), plus ``demo_pool_size`` (the pool actually used);
* caption: ``shots`` = 0;
* binding / deepmind: ``ways``, ``inner_shots``, ``repeats``, ``task_induction``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from frozen.config import BindingTaskConfig, CaptionTaskConfig, DeepMindTaskConfig, EvalTaskConfig, VqaTaskConfig
from frozen.core import dist
from frozen.errors import DataError
from frozen.eval import tasks as T
from frozen.eval.harness import Harness
from frozen.eval.metrics import caption_scores, exact_match, strict_match, vqa_accuracy
from frozen.model.loss import summed_token_loss


def run_task(name: str, task: EvalTaskConfig, h: Harness) -> None:
    """Run one task of a preset with the function of its kind."""
    if isinstance(task, VqaTaskConfig):
        eval_vqa(name, task, h)
    elif isinstance(task, CaptionTaskConfig):
        eval_caption(name, task, h)
    elif isinstance(task, (BindingTaskConfig, DeepMindTaskConfig)):
        eval_episodes(name, task, h)
    else:
        raise TypeError(f"task {name}: {type(task).__name__} is not an evaluation task schema")


# ----------------------------------------------------------------------------------------- VQA
def _question_id(qid: str) -> int | str:
    return int(qid) if str(qid).isdigit() else qid


def eval_vqa(name: str, task: VqaTaskConfig, h: Harness) -> None:
    """Official VQA accuracy per (shots, condition), mean over trials, and per answer type.

    A split without answers (VQAv2 test-dev/test-std) is not scored: each setting writes the
    official server's file ``[{"question_id": int, "answer": str}]`` and a note says why.
    """
    if not task.shards:
        raise DataError(f"task {name}: set shards= (a shard pattern relative to data_root={h.cfg.data_root})")
    items = T.load_items(task, h.data, image_size=h.image_size, rank=h.info.rank, world_size=h.info.world_size,
                         limit=h.limit(task))
    unanswered = sum(dist.all_gather_objects(sum(T.answers_of(ex.meta) is None for ex in items)))
    total = sum(dist.all_gather_objects(len(items)))
    if 0 < unanswered < total:
        raise DataError(f"task {name}: {unanswered} of {total} questions in shards={task.shards} have no answers; "
                        "evaluate an answered split or a test split, not a mixture")
    scored = unanswered == 0
    pool = T.load_demo_pool(name, task, h.data, image_size=h.image_size) if max(task.shots) > 0 else None
    for shots, condition in itertools.product(task.shots, task.conditions):
        if condition == "text_demos" and shots == 0:
            continue  # identical to "image" without demonstrations
        settings = {"shots": shots}
        extra = {"demo_pool_size": len(pool)} if shots > 0 else {}  # the pool the demonstrations came from
        overall, by_type, type_n, n = [], {}, {}, 0
        for trial in range(task.num_trials if shots > 0 else 1):
            queries = T.vqa_queries(items, pool, task, shots=shots, condition=condition, seed=h.cfg.seed, trial=trial)
            records = h.answer(queries, task, condition)
            n = len(records)
            if not scored:
                h.submissions[f"{name}-shots{shots}-{condition}-trial{trial}.json"] = [
                    {"question_id": _question_id(r["id"]), "answer": r["prediction"]} for r in records]
                h.keep(name, settings, condition, trial, records)
                continue
            for r in records:
                r["score"] = vqa_accuracy(r["prediction"], r["target"])
            h.keep(name, settings, condition, trial, records)
            overall.append(sum(r["score"] for r in records) / max(n, 1))
            for t in sorted({r.get("answer_type") for r in records if r.get("answer_type")}):
                scores = [r["score"] for r in records if r.get("answer_type") == t]
                by_type.setdefault(t, []).append(sum(scores) / len(scores))
                type_n[t] = len(scores)
            h.log(f"{name} shots={shots} {condition} trial {trial}: vqa accuracy {overall[-1]:.3f} (n={n})")
        if scored:
            h.add_row(name, "vqa_accuracy", condition, overall, n, settings, **extra)
            for t, values in by_type.items():
                h.add_row(name, f"vqa_accuracy[{t}]", condition, values, type_n[t], settings, **extra)
    if not scored:
        h.notes.append(f"{name}: no score rows: its {total} questions have no answers (a test split); predictions "
                       f"in the official server format are in submissions/{name}-*.json")


# ------------------------------------------------------------------------------------- captions
def eval_caption(name: str, task: CaptionTaskConfig, h: Harness) -> None:
    """BLEU-4 and CIDEr against every reference caption per condition; perplexity with the image."""
    if not task.shards:
        raise DataError(f"task {name}: set shards= (a shard pattern relative to data_root={h.cfg.data_root})")
    items = T.load_items(task, h.data, image_size=h.image_size, rank=h.info.rank, world_size=h.info.world_size,
                         limit=h.limit(task))
    tok = h.model.tokenizer
    settings = {"shots": 0}
    for condition in task.conditions:
        if condition == "text_demos":
            continue  # captioning has no demonstrations
        queries = T.caption_queries(items, task, condition=condition, start_text=tok.bos_token or tok.eos_token)
        records = h.answer(queries, task, condition)
        n = len(records)
        scores = caption_scores({r["id"]: r["target"] for r in records}, {r["id"]: [r["prediction"]] for r in records})
        h.keep(name, settings, condition, 0, records)
        for metric in ("BLEU-4", "CIDEr"):
            h.add_row(name, metric, condition, [scores[metric]], n, settings)
        h.log(f"{name} {condition}: BLEU-4 {scores['BLEU-4']:.3f} CIDEr {scores['CIDEr']:.3f} (n={n})")
    for condition in ("image", "black_images"):
        if condition in task.conditions:
            n = sum(dist.all_gather_objects(len(items)))
            ppl = perplexity(h, items, black=condition == "black_images")
            h.add_row(name, "perplexity", condition, [ppl], n, settings)


@torch.no_grad()
def perplexity(h: Harness, items: list[Any], black: bool = False) -> float:
    """exp(summed caption-token cross-entropy / number of caption tokens) with the image prefix
    (of a black image when ``black``), over all ranks' items: a per-token mean, not a mean of
    per-caption perplexities."""
    from frozen.data.collate import Collator

    collate = Collator(h.model.tokenizer, h.data.max_length)
    totals = torch.zeros(2, dtype=torch.float64)  # [summed CE, target tokens]
    h.model.eval()
    for start in range(0, len(items), h.cfg.batch_size):
        batch = collate(items[start : start + h.cfg.batch_size])
        if black:
            batch["images"] = torch.zeros_like(batch["images"])  # [B, 3, S, S]
        summed, n = summed_token_loss(h.model, batch, h.autocast)
        totals += torch.tensor([summed, n], dtype=torch.float64)
    totals = dist.all_reduce_sum(totals.to(h.info.device)).cpu()
    return math.exp(min(50.0, (totals[0] / totals[1].clamp(min=1)).item()))


# ------------------------------------------------------------------------------------- episodes
def _my_share(episodes: list[Any], h: Harness) -> list[Any]:
    """Whole support groups per rank (a group is one episode when each support set has one query)."""
    groups = {key: i for i, key in enumerate(dict.fromkeys(ep.support_id or f"#{j}" for j, ep in enumerate(episodes)))}
    return [ep for j, ep in enumerate(episodes) if groups[ep.support_id or f"#{j}"] % h.info.world_size == h.info.rank]


def eval_episodes(name: str, task: BindingTaskConfig | DeepMindTaskConfig, h: Harness) -> None:
    """Accuracy over the grid ways x inner_shots x repeats x task_induction x conditions.

    Two metrics per setting: ``accuracy`` (exact match after the official answer normalisation,
    articles dropped) and ``accuracy_strict`` (the name, then the end of the answer). Binding sets
    are drawn per trial (seed + trial); the released DeepMind sets are fixed: one trial.
    """
    trials = task.num_trials if isinstance(task, BindingTaskConfig) else 1
    limit = h.limit(task)
    for ways, shots, repeats in itertools.product(task.ways, task.inner_shots, task.repeats):
        sets = [T.load_episodes(task, ways=ways, shots=shots, repeats=repeats, seed=h.cfg.seed + t)[:limit]
                for t in range(trials)]
        for induction in task.task_induction:
            if induction and not all(ep.task_induction for eps in sets for ep in eps):
                h.notes.append(f"{name} {ways}-way inner_shots={shots}: no task-induction text in this set "
                               "(Fast-/Guided-VQA); task_induction=true skipped")
                continue
            for condition in task.conditions:
                if condition != "text_demos":  # episodes are scored with or without all images, not half
                    _episode_rows(name, task, h, sets, condition,
                                  {"ways": ways, "inner_shots": shots, "repeats": repeats, "task_induction": induction})


def _episode_rows(name: str, task: BindingTaskConfig | DeepMindTaskConfig, h: Harness, sets: list[list[Any]],
                  condition: str, settings: dict[str, Any]) -> None:
    induction = settings["task_induction"]
    accs, stricts, n = [], [], 0
    for trial, episodes in enumerate(sets):
        queries = T.episode_queries(_my_share(episodes, h), induction=induction, condition=condition)
        records = h.answer(queries, task, condition)
        for r in records:
            r["score"] = exact_match(r["prediction"], r["target"])
            r["score_strict"] = strict_match(r["prediction"], r["target"])
        n = len(records)
        accs.append(sum(r["score"] for r in records) / max(n, 1))
        stricts.append(sum(r["score_strict"] for r in records) / max(n, 1))
        h.keep(name, settings, condition, trial, records)
    h.add_row(name, "accuracy", condition, accs, n, settings)
    h.add_row(name, "accuracy_strict", condition, stricts, n, settings)
    h.log(f"{name} {settings['ways']}-way inner_shots={settings['inner_shots']} repeats={settings['repeats']} "
          f"induction={induction} {condition}: accuracy {sum(accs) / len(accs):.3f} strict "
          f"{sum(stricts) / len(stricts):.3f} (chance {1 / settings['ways']:.3f}, n={n}, trials={len(accs)})")
