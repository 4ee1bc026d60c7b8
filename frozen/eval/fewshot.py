"""Few-shot episodes (the offline easy-VQA binding set and DeepMind's released sets): one set of
episodes per grid point, one query per episode, greedy answers, exact-match accuracy.

Rows: ``ways``, ``inner_shots``, ``repeats``, ``task_induction``. The episode format and the sets
themselves live in :mod:`frozen.eval.episodes` and :mod:`frozen.eval.deepmind`.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

from frozen.config import BindingTaskConfig, DeepMindTaskConfig
from frozen.errors import DataError
from frozen.eval.answer import Query, skip_text
from frozen.eval.context import EvalContext
from frozen.eval.deepmind import load_deepmind_task
from frozen.eval.episodes import NAMING_TASKS, Episode, build_easyvqa_binding, episode_parts
from frozen.eval.metrics import exact_match, strict_match


def load_episodes(task: BindingTaskConfig | DeepMindTaskConfig, *, ways: int, shots: int, repeats: int,
                  seed: int) -> list[Episode]:
    """One set of episodes for (ways, inner shots, repeats), with the task's query templates."""
    if isinstance(task, BindingTaskConfig):
        episodes = build_easyvqa_binding(split=task.split, ways=ways, shots=shots, num_episodes=task.num_episodes,
                                         seed=seed, category=task.category,
                                         queries_per_episode=task.queries_per_episode)
    else:
        if not task.root or not task.task:
            raise DataError("a deepmind task needs root= (the extracted archives) and task= (e.g. open_ended_mi); "
                            "fetch them with scripts/download_fewshot.sh")
        episodes = load_deepmind_task(task.root, task.task, ways=ways, shots=shots)
    for ep in episodes:
        ep.repeats = repeats
        ep.question_template = task.question_template
        if ep.source in NAMING_TASKS:
            ep.question, ep.answer_prefix = task.naming_question, task.answer_prefix
    return episodes


def episode_queries(episodes: Sequence[Episode], *, induction: bool, condition: str) -> Iterator[Query]:
    """One query per episode; ``black_images`` is built as ``image`` (see
    :func:`frozen.eval.answer.black_out`)."""
    for ep in episodes:
        support, query = episode_parts(ep, task_induction=induction, with_images=condition in ("image", "black_images"),
                                       query_image=condition != "no_image")
        yield Query.grouped(ep.episode_id, support, query, ep.support_id, target=ep.answer,
                            meta={"episode_task": ep.source})


def _my_share(episodes: list[Any], ctx: EvalContext) -> list[Any]:
    """Whole support groups per rank (a group is one episode when each support set has one query)."""
    groups = {key: i for i, key in enumerate(dict.fromkeys(ep.support_id or f"#{j}" for j, ep in enumerate(episodes)))}
    info = ctx.info
    return [ep for j, ep in enumerate(episodes) if groups[ep.support_id or f"#{j}"] % info.world_size == info.rank]


def run_episodes(name: str, task: BindingTaskConfig | DeepMindTaskConfig, ctx: EvalContext) -> None:
    """Accuracy over the grid ways x inner_shots x repeats x task_induction x conditions.

    Two metrics per setting: ``accuracy`` (exact match after the official answer normalisation,
    articles dropped) and ``accuracy_strict`` (the name, then the end of the answer). Binding sets
    are drawn per trial (seed + trial); the released DeepMind sets are fixed: one trial.
    """
    trials = task.num_trials if isinstance(task, BindingTaskConfig) else 1
    limit = ctx.limit(task)
    for ways, shots, repeats in itertools.product(task.ways, task.inner_shots, task.repeats):
        sets = [load_episodes(task, ways=ways, shots=shots, repeats=repeats, seed=ctx.cfg.seed + t)[:limit]
                for t in range(trials)]
        for induction in task.task_induction:
            if induction and not all(ep.task_induction for eps in sets for ep in eps):
                ctx.store.notes.append(f"{name} {ways}-way inner_shots={shots}: no task-induction text in this "
                                       "set (Fast-/Guided-VQA); task_induction=true skipped")
                continue
            for condition in task.conditions:
                if condition != "text_demos":  # episodes are scored with or without all images, not half
                    _episode_rows(name, task, ctx, sets, condition,
                                  {"ways": ways, "inner_shots": shots, "repeats": repeats, "task_induction": induction})


def _episode_rows(name: str, task: BindingTaskConfig | DeepMindTaskConfig, ctx: EvalContext, sets: list[list[Any]],
                  condition: str, settings: dict[str, Any]) -> None:
    induction = settings["task_induction"]
    accs, stricts, n, skipped = [], [], 0, {}
    for trial, episodes in enumerate(sets):
        queries = episode_queries(_my_share(episodes, ctx), induction=induction, condition=condition)
        records, skipped = ctx.answerer.answer(queries, task, condition)  # n and skipped: the last trial's
        for r in records:
            r["score"] = exact_match(r["prediction"], r["target"])
            r["score_strict"] = strict_match(r["prediction"], r["target"])
        n = len(records)
        if records:  # a trial whose every episode was too long has no score
            accs.append(sum(r["score"] for r in records) / n)
            stricts.append(sum(r["score_strict"] for r in records) / n)
        ctx.store.keep(name, settings, condition, trial, records)
    ctx.store.add_row(name, "accuracy", condition, accs, n, settings, skipped)
    ctx.store.add_row(name, "accuracy_strict", condition, stricts, n, settings, skipped)
    ctx.log(f"{name} {settings['ways']}-way inner_shots={settings['inner_shots']} repeats={settings['repeats']} "
            f"induction={induction} {condition}: accuracy {_mean(accs):.3f} strict {_mean(stricts):.3f} "
            f"(chance {1 / settings['ways']:.3f}, n={n}, trials={len(accs)}{skip_text(skipped)})")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
