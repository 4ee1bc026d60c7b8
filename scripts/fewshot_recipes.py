"""Which training makes the visual prefix readable anywhere in a prompt? Recipes compared on one budget.

Every recipe fine-tunes the same trained `frozen` export (``--base``: make demo's captions-only model) for the
same number of steps on the same stream as `frozen_vqa` (``experiment=demo_frozen_vqa``: easy-VQA captions
mixed ~50/50 with training questions, batch 16), with the regular ``train.py``; only the row layout differs:

* ``baseline``: the paper's layout, ``[prefix][text]`` (frozen_vqa as make demo trains it),
* ``lead``: a fixed lead text before the prefix in training AND in every validation prompt (``data.lead_text``),
* ``text_before``: another example's text-only Q/A line before the image in half the rows (``data.text_before_image``),
* ``interleave``: several pairs per row in one causal context (``data.interleave``, ``"\\n"`` between pairs),
* ``captions_interleave`` (not a candidate: no VQA data): captions only, interleaved; the paper's claim in
  miniature, that few-shot VQA comes from caption training alone.

They are scored on a VALIDATION split, never on the test questions: the first ``--val-questions`` questions
of ``easyvqa/vqa-train-000038.tar`` (a training shard no recipe trains on: the stream reads shards 0-3), with
demonstrations drawn from ``vqa-train-000000.tar`` (the first 1,000 training questions, as the demo's
evaluation draws them; never a question about the query's own image). Conditions: 0-shot image first
(``<image>Q: .. A:``), 0-shot text first (the position check's line, then the image), 1- and 4-shot with
images, and the text-only LM at 0/1/4 shots. Greedy, 4 new tokens, cut at the first newline, official VQA
accuracy (frozen.eval.metrics) with a Wilson 95% interval (frozen.eval.stats). The recipe with the highest
mean over the four image conditions is the pick.

    .venv/bin/python scripts/fewshot_recipes.py --base outputs/demo/frozen/export

writes ``<out>/<recipe>/`` (the runs), ``<out>/results.json`` and ``<out>/results.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = {  # recipe -> train.py overrides (the interleaved ones: make demo's frozen_interleaved preset)
    "baseline": ["experiment=demo_frozen_vqa"],
    "lead": ["experiment=demo_frozen_vqa", "data.lead_text=Picture:"],
    "text_before": ["experiment=demo_frozen_vqa", "data.text_before_image=0.5", "data.max_length=48"],
    "interleave": ["experiment=demo_frozen_interleaved"],
    "captions_interleave": ["experiment=demo_frozen_interleaved", "data=easyvqa", "data.num_workers=1"],
}
CANDIDATES = ("baseline", "lead", "text_before", "interleave")
LEAD = {"lead": "Picture:"}  # what each recipe puts before every image at evaluation time
POSITION_LINE = "Answer the question about the picture.\n"  # the position check's neutral line (make demo)
VAL_SHARD, DEMO_SHARD = "easyvqa/vqa-train-000038.tar", "easyvqa/vqa-train-000000.tar"
CONDITIONS = ("0-shot", "0-shot text first", "1-shot", "4-shot")


def train(recipe: str, args) -> Path:
    """Fine-tune ``args.base`` with ``recipe``'s layout (a finished run is resumed, i.e. not retrained)."""
    run_dir = Path(args.out) / recipe
    overrides = [*RECIPES[recipe], f"run_dir={run_dir}", f"data_root={args.data_root}",
                 f"init_from={args.base}", f"seed={args.seed}", f"trainer.max_steps={args.steps}",
                 f"trainer.threads={args.threads}", "trainer.ckpt_every=0"]
    print("$ train.py " + " ".join(overrides), flush=True)
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"training recipe {recipe} failed (exit {proc.returncode})")
    return run_dir / "export"


def prompts(query, pool, shots: int, lead: str, condition: str, trial: int):
    """(prompt, images) of one validation question, demonstrations seeded by (trial, question)."""
    from frozen.eval.vqa import answers_of
    from frozen.model.prompts import query_rng, sample_shots

    parts, images = [], []
    if shots:
        rng = query_rng(0, trial, query.key)
        for i in sample_shots(len(pool), shots, rng, exclude=pool.excluded_for(query.key, query.meta)):
            _, image, meta = pool.demo(i)
            text = f"Q: {meta['question']} A: {answers_of(meta)[0]}"
            parts.append(text if condition == "no_image" else f"{lead}<image>{text}")
            images.append(image)
    question = f"Q: {query.meta['question']} A:"
    if condition == "no_image":
        return "\n".join(parts + [question]), []
    first = POSITION_LINE if condition == "text_first" else ""
    return "\n".join(parts + [f"{first}{lead}<image>{question}"]), images + [query.image]


def score(model, queries, pool, shots: int, lead: str, condition: str, trials: int) -> dict:
    """Mean VQA accuracy over ``trials`` (1 at 0 shots) and its Wilson 95% interval on the questions."""
    import torch

    from frozen.eval.metrics import vqa_accuracy
    from frozen.eval.stats import wilson_interval
    from frozen.eval.vqa import answers_of

    values = []
    for trial in range(trials if shots else 1):
        built = [prompts(q, pool, shots, lead, condition, trial) for q in queries]
        with torch.no_grad():
            replies = model.generate([b[1] for b in built] if condition != "no_image" else None,
                                     [b[0] for b in built], max_new_tokens=4, stop_strings=["\n"], batch_size=16)
        values += [vqa_accuracy(r, answers_of(q.meta)) for r, q in zip(replies, queries)]
    mean = sum(values) / len(values)
    return {"mean": mean, "ci95": list(wilson_interval(mean, len(queries))), "num_examples": len(queries)}


def evaluate(exports: dict[str, Path], args) -> dict[str, dict[str, dict]]:
    import torch

    from frozen import FrozenModel
    from frozen.data.pipeline import iter_eval_samples
    from frozen.eval.vqa import DemoPool

    if args.threads:
        torch.set_num_threads(args.threads)
    take = lambda shard, n: [e for _, e in zip(range(n), iter_eval_samples(shard, data_root=args.data_root,  # noqa: E731
                                                                               image_size=64))]
    queries, pool = take(VAL_SHARD, args.val_questions), DemoPool(take(DEMO_SHARD, 1000))
    results: dict[str, dict[str, dict]] = {}
    for name, export in exports.items():
        start = time.perf_counter()
        model = FrozenModel.from_pretrained(export).eval()
        lead = LEAD.get(name, "")
        results[name] = {c: score(model, queries, pool, int(c[0]), lead, "text_first" if "text" in c else "image",
                                  args.trials) for c in CONDITIONS}
        if not results.get("no_image"):  # the text-only LM: the same for every recipe
            results["no_image"] = {f"{s}-shot": score(model, queries, pool, s, "", "no_image", args.trials)
                                   for s in (0, 1, 4)}
        print(f"{name}: " + ", ".join(f"{c} {r['mean']:.3f}" for c, r in results[name].items())
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return results


def table(results: dict[str, dict[str, dict]], args) -> str:
    cols = [*CONDITIONS, "mean (pick)"]
    lines = [f"| recipe | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    for name, cells in results.items():
        text = [f"{cells[c]['mean']:.3f} [{cells[c]['ci95'][0]:.2f}, {cells[c]['ci95'][1]:.2f}]" if c in cells else "-"
                for c in CONDITIONS]
        pick = f"{sum(cells[c]['mean'] for c in CONDITIONS) / len(CONDITIONS):.3f}" if name in CANDIDATES else "-"
        lines.append(f"| {name} | {' | '.join(text)} | {pick} |")
    return "\n".join(lines) + (
        f"\n\n*VQA accuracy on {args.val_questions} held-out easy-VQA training questions ({VAL_SHARD}), "
        f"{args.steps} fine-tuning steps from {args.base}, training seed {args.seed}; 1/4-shot: mean of "
        f"{args.trials} trials; [Wilson 95% interval]. no_image: the frozen LM alone (0/1/4-shot in the "
        "0-shot/1-shot/4-shot columns).*\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the trained captions-only export every recipe starts from")
    parser.add_argument("--out", default="outputs/recipes")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps of every recipe (frozen_vqa: 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--val-questions", type=int, default=120)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of " + ", ".join(RECIPES))
    args = parser.parse_args()
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    if not (Path(args.base) / "frozen_config.json").is_file():
        raise SystemExit(f"--base {args.base} is not a trained export (no frozen_config.json); run make demo first")
    timings = {}
    exports = {}
    for name in names:
        start = time.perf_counter()
        exports[name] = train(name, args)
        timings[f"train {name}"] = time.perf_counter() - start
    start = time.perf_counter()
    results = evaluate(exports, args)
    timings["evaluate"] = time.perf_counter() - start
    out = Path(args.out)
    md = table(results, args)
    picks = {n: sum(results[n][c]["mean"] for c in CONDITIONS) / len(CONDITIONS) for n in names if n in CANDIDATES}
    best = max(picks, key=picks.get) if picks else None
    (out / "results.json").write_text(json.dumps({"results": results, "pick": best, "pick_scores": picks,
                                                  "args": vars(args), "timings_s": timings}, indent=2) + "\n")
    (out / "results.md").write_text(md)
    print(md)
    print(f"pick (highest mean over the four image conditions): {best}; timings: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
