"""`make demo`: the paper's table in miniature, offline, on a CPU.

1. easy-VQA shards (reused when present),
2. train `frozen` (captions only, from scratch), then `frozen_vqa` (frozen's weights, fine-tuned
   on captions + VQA questions) and `frozen_textmix` (the same, with another example's text-only Q/A line
   before the image in half the rows: docs/fewshot.md) with the regular train.py and the `demo_frozen` /
   `demo_frozen_vqa` / `demo_frozen_textmix` experiment presets (a finished run in outputs/demo/<model> is
   resumed, i.e. not retrained: delete it to train again),
3. evaluate each with the regular evaluate.py (`eval=demo`): captioning, VQA 0/1/4-shot and
   2-way fast binding, each beside its text-only (no_image) baseline, and the position check
   (0-shot VQA with a neutral line of text before the image: `text_first`),
4. write outputs/demo/results.json, outputs/demo/fewshot.png (every model per task), outputs/demo/samples.png
   and print one table + the timings.

`--seeds N` (`make demo SEEDS=3`) repeats 2-3 with training seeds 0..N-1 (seed 0 in outputs/demo/<model>,
seed s in outputs/demo/seed<s>/<model>) and reports each cell as mean ± std over the training seeds, the
evaluation-trial spread beside it, and a 95% interval for accuracy cells (frozen.eval.stats). The
evaluation seed is the same for every training seed, so the seed spread is the training's alone.

What the demo reports (the merged rows, the table and fewshot.png) is :mod:`frozen.demo`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from frozen.demo import INIT_FROM, MODELS, demo_figure, merged_rows, seed_dir, summary_markdown, summary_table

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], what: str, timings: dict[str, float]) -> None:
    from frozen.core.logging import console

    console.rule(f"[bold]{what}")
    console.print("[dim]$ " + " ".join(cmd) + "[/dim]")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
    timings[what] = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed ({what}, exit {proc.returncode}); see the output above")


def machine() -> str:
    """The CPU model and thread count: trained numbers are reproducible only on the same kind of machine."""
    import torch

    from frozen.bench.lib import machine_info  # the benchmark's machine description, one reader of /proc/cpuinfo

    info = machine_info(torch.device("cpu"))
    return f"{info['cpu']}, {info['cores']} CPU cores, torch {info['torch']} with {info['torch_threads']} threads"


def samples_grid(out: Path, data_root: Path, num: int = 8) -> Path:
    """Test images with each model's caption and VQA answer under them -> samples.png."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from frozen import FrozenModel
    from frozen.data.pipeline import iter_eval_samples

    picks, seen = [], set()
    for ex in iter_eval_samples("easyvqa/vqa-test-*.tar", data_root=str(data_root), image_size=64):
        if ex.meta["image_id"] not in seen and ex.meta.get("question_type") in ("color", "shape"):
            seen.add(ex.meta["image_id"])
            picks.append(ex)
        if len(picks) == num:
            break
    answers = {}
    for model in MODELS:
        frozen = FrozenModel.from_pretrained(out / model / "export").eval()
        with torch.no_grad():
            captions = frozen.generate(
                [[ex.image] for ex in picks], ["<image>"] * len(picks), max_new_tokens=8, stop_strings=["\n"]
            )
            replies = frozen.generate(
                [[ex.image] for ex in picks],
                [f"<image>Q: {ex.meta['question']} A:" for ex in picks],
                max_new_tokens=4,
                stop_strings=["\n"],
            )
        answers[model] = list(zip(captions, replies))
    cell_w, img_px, cols = 300, 128, 4
    text_h = 21 * (2 + 2 * len(MODELS)) + 14  # question, truth, then a caption and an answer per model
    rows = (len(picks) + cols - 1) // cols
    grid = Image.new("RGB", (cell_w * cols, (img_px + text_h) * rows), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=13)
    for i, ex in enumerate(picks):
        image = Image.fromarray((ex.image.permute(1, 2, 0) * 255).byte().numpy()).resize(
            (img_px, img_px), Image.NEAREST
        )
        x, y = (i % cols) * cell_w, (i // cols) * (img_px + text_h)
        grid.paste(image, (x + (cell_w - img_px) // 2, y))
        lines = [f"Q: {ex.meta['question']}", f"truth: {ex.meta['answers'][0]}"]
        for model, pairs in answers.items():
            caption, reply = (text.strip() or "(empty: stopped at newline)" for text in pairs[i])
            lines += [f"{model} caption: {caption}", f"{model} answer: {reply}"]
        for j, line in enumerate(lines):
            draw.text((x + 6, y + img_px + 6 + 21 * j), line[:46], fill="black", font=font)
    path = out / "samples.png"
    grid.save(path)
    return path


def train_and_evaluate(
    out: Path, data_root: Path, seed: int, args, extra: list[str], timings: dict[str, float]
) -> list[dict]:
    """Train every model with training seed ``seed`` into ``out``, evaluate them, return the merged rows."""
    py = sys.executable
    tag = f" (seed {seed})" if args.seeds > 1 else ""
    for model, preset in MODELS.items():
        overrides = [f"experiment={preset}", f"run_dir={out / model}", f"data_root={data_root}", f"seed={seed}", *extra]
        if model in INIT_FROM:
            overrides.append(f"init_from={out / INIT_FROM[model] / 'export'}")
        if args.max_steps:
            overrides.append(f"trainer.max_steps={args.max_steps}")
        run([py, "train.py", *overrides], f"train {model}{tag}", timings)
    for i, model in enumerate(MODELS):
        # seed=0: the evaluation's own seed (demonstrations, episodes) is the same for every training seed
        overrides = [
            f"load_path={out / model}",
            "eval=demo",
            f"run_dir={out / 'eval' / model}",
            f"data_root={data_root}",
            "batch_size=32",
            "seed=0",
        ]
        if args.max_examples:
            overrides.append(f"max_examples={args.max_examples}")
        if i > 0:  # text-only rows do not depend on the model: computed once, with the first
            from frozen.demo import later_model_conditions  # the preset's other conditions (text_first stays)

            overrides += later_model_conditions(REPO / "conf" / "eval" / "demo.yaml")
        run([py, "evaluate.py", *overrides], f"evaluate {model}{tag}", timings)
    return merged_rows(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds 0..N-1; cells report mean ± std over them")
    parser.add_argument("--max-examples", type=int, default=None, help="cap every evaluation task (quick look)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the presets' training steps")
    parser.add_argument("--report", action="store_true",
                        help="only re-print the table (and redraw fewshot.png) of an existing results.json")
    args, extra = parser.parse_known_args()  # extra: Hydra overrides passed to every train.py run
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {args.seeds}")
    if args.report:
        report(REPO / args.out)
        return

    from frozen.bench.lib import cpu_times, steal_fraction
    from frozen.core.logging import console
    from frozen.eval.stats import aggregate_seeds
    from frozen.eval.store import write_all

    start, cpu_start = time.perf_counter(), cpu_times()
    timings: dict[str, float] = {}
    out, data_root = REPO / args.out, REPO / args.data_root
    if not (data_root / "easyvqa" / "sizes.json").is_file():
        run(
            [sys.executable, "scripts/make_shards.py", "easyvqa", "--out", str(data_root / "easyvqa")],
            "shards",
            timings,
        )
    else:
        console.print(f"[dim]reusing shards in {data_root / 'easyvqa'}[/dim]")
    per_seed = [train_and_evaluate(seed_dir(out, s), data_root, s, args, extra, timings) for s in range(args.seeds)]
    rows = aggregate_seeds(per_seed)

    t0 = time.perf_counter()
    grid = samples_grid(out, data_root)
    timings["samples.png"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    steal = steal_fraction(cpu_start, cpu_times())
    results = {
        "rows": rows,
        "per_seed_rows": {str(s): r for s, r in enumerate(per_seed)},
        "seeds": list(range(args.seeds)),
        "timings_s": timings,
        "models": {m: str(out / m / "export") for m in MODELS},
        "machine": machine(),
        "cpu_steal": steal,
    }
    # fsync'd, then renamed together: a full disk leaves the previous demo's files as they were
    write_all(out, {"results.json": json.dumps(results, indent=2) + "\n",
                    "results.md": summary_markdown(rows, args.seeds)})
    figure = demo_figure(rows, out / "fewshot.png", args.seeds)
    console.print(summary_table(rows, args.seeds))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {figure} and {grid}")
    console.print(f"machine: {results['machine']}")
    console.print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    console.print(f"[bold]make demo finished in {timings['total'] / 60:.1f} min[/bold]")
    if steal is not None:  # a shared VM: other guests' load shows up as steal, not as our CPU time
        console.print(
            f"CPU steal during the run: {steal:.0%} of CPU time went to other guests of this host"
            + (" (the timings above are inflated by it)" if steal > 0.05 else "")
        )


def report(out: Path) -> None:
    """Re-print the table of ``out/results.json``, rewrite ``out/results.md`` and ``out/fewshot.png`` (no training)."""
    from frozen.core.logging import console

    path = out / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run `make demo` first")
    results = json.loads(path.read_text())
    num_seeds = len(results.get("seeds", [0]))
    from frozen.eval.store import write_all

    write_all(out, {"results.md": summary_markdown(results["rows"], num_seeds)})
    figure = demo_figure(results["rows"], out / "fewshot.png", num_seeds)
    console.print(summary_table(results["rows"], num_seeds))
    console.print(f"machine: {results.get('machine')}; wrote {out / 'results.md'} and {figure}")


if __name__ == "__main__":
    main()
