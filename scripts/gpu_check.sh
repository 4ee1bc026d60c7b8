#!/usr/bin/env bash
# One prepared GPU check (~10 minutes on one node), writing one JSON of results:
#   1. make bench ARGS="--device cuda"          tokens/s and MFU of the train step (+ the other entries)
#   2. 200 steps of the demo configuration in bf16 on one GPU, eager and with trainer.compile=true
#      (each logs img/s, tok/s, padding and MFU every 20 steps; the JSON keeps the last and the median)
#   3. DDP over NCCL on every visible GPU (num_gpus = visible GPUs)
#   4. the same with trainer.strategy=fsdp (frozen LM sharded with FSDP2)
#   5. make demo's evaluation of the 200-step export
#   6. host reads of device values per training step and seconds per step (python -m frozen.train.hostsync,
#      100 demo steps, logging every 20), then the same with two waits per step as the step had before
#      (--emulate-old-syncs): what the waits cost on this GPU (docs/host_syncs.md)
# Usage: scripts/gpu_check.sh [--dry-run] [--out DIR]
#   --dry-run  runs here, on CPU, in seconds: every command is built exactly as on a GPU and parsed
#              (Hydra `--cfg job` composes and type-checks each config; the bench parses its arguments)
#              but nothing trains; the test suite runs it so that the script cannot rot.
set -euo pipefail

DRY=0
OUT=outputs/gpu_check
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'; use --dry-run and/or --out DIR" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false WANDB_MODE=${WANDB_MODE:-disabled}
mkdir -p "$OUT"

if [[ $DRY == 1 ]]; then
  NGPU=2
else
  NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
  if [[ "$NGPU" -lt 1 ]]; then
    echo "gpu_check.sh: no CUDA device is visible; run it on a GPU machine, or use --dry-run here" >&2
    exit 1
  fi
  [[ -d data/easyvqa ]] || "$PY" scripts/make_shards.py easyvqa --out data/easyvqa
fi

DEMO=(experiment=demo_frozen trainer.device=cuda trainer.precision=bf16 trainer.val_every=0 trainer.log_every=20
      logger=none data.num_workers=4)
BENCH_ARGS=(--device cuda --repeats 3 --out "$OUT/bench.json")
declare -A CMDS=(
  [single]="train.py ${DEMO[*]} trainer.max_steps=200 trainer.ckpt_every=0 run_dir=$OUT/single"
  [compiled]="train.py ${DEMO[*]} trainer.max_steps=200 trainer.ckpt_every=0 trainer.compile=true run_dir=$OUT/compiled"
  [ddp]="train.py ${DEMO[*]} trainer.max_steps=100 num_gpus=$NGPU per_gpu_batchsize=16 trainer.batch_size=$((16 * NGPU)) run_dir=$OUT/ddp"
  [fsdp]="train.py ${DEMO[*]} trainer.max_steps=100 num_gpus=$NGPU per_gpu_batchsize=16 trainer.batch_size=$((16 * NGPU)) trainer.strategy=fsdp run_dir=$OUT/fsdp"
  [eval]="evaluate.py eval=demo load_path=$OUT/single/export device=cuda precision=bf16 run_dir=$OUT/eval"
  [syncs]="-m frozen.train.hostsync ${DEMO[*]} trainer.max_steps=100 trainer.ckpt_every=0 run_dir=$OUT/syncs --out $OUT/syncs.json"
  [syncs_old]="-m frozen.train.hostsync --emulate-old-syncs ${DEMO[*]} trainer.max_steps=100 trainer.ckpt_every=0 run_dir=$OUT/syncs_old --out $OUT/syncs_old.json"
)
ORDER=(single compiled ddp fsdp eval syncs syncs_old)

declare -A SECONDS_TAKEN STATUS
if [[ $DRY == 1 ]]; then
  "$PY" -c 'import sys; from frozen.bench.cli import parse_args; parse_args(sys.argv[1:])' "${BENCH_ARGS[@]}"
  STATUS[bench]=parsed
  for name in "${ORDER[@]}"; do
    # shellcheck disable=SC2086  # the commands are word lists by construction
    "$PY" ${CMDS[$name]} --cfg job > "$OUT/$name.cfg.yaml"
    STATUS[$name]=parsed
  done
else
  start=$SECONDS
  make bench ARGS="${BENCH_ARGS[*]}" > "$OUT/bench.log" 2>&1 && STATUS[bench]=ok || STATUS[bench]=failed
  SECONDS_TAKEN[bench]=$((SECONDS - start))
  for name in "${ORDER[@]}"; do
    start=$SECONDS
    # shellcheck disable=SC2086
    "$PY" ${CMDS[$name]} > "$OUT/$name.log" 2>&1 && STATUS[$name]=ok || STATUS[$name]=failed
    SECONDS_TAKEN[$name]=$((SECONDS - start))
  done
fi

status_json="{"
for name in bench "${ORDER[@]}"; do
  status_json+="\"$name\": {\"status\": \"${STATUS[$name]}\", \"seconds\": ${SECONDS_TAKEN[$name]:-null}, \"command\": \"$([[ $name == bench ]] && echo "make bench ARGS='${BENCH_ARGS[*]}'" || echo "${CMDS[$name]}")\"},"
done
status_json="${status_json%,}}"
"$PY" - "$OUT" "$DRY" "$NGPU" "$status_json" <<'PYEOF'
"""Collect the runs' numbers into one JSON (what each run left behind; nothing is recomputed)."""
import json, statistics, sys
from pathlib import Path

out, dry, ngpu, runs = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), json.loads(sys.argv[4])
THROUGHPUT = ("img/s", "tok/s", "padding", "mfu")  # the training log's rates over each log interval
def last_metrics(run):
    path = out / run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    # The first interval holds start-up (loader workers, CUDA context, compilation): the median is
    # taken over the intervals after it, and the first is kept on its own.
    steady = rows[1:] or rows
    median = lambda k: statistics.median(r[k] for r in steady) if all(k in r for r in steady) else None
    return {"final_step": rows[-1]["step"], "final_loss": rows[-1]["loss"],
            "img_per_s": rows[-1].get("img/s"),
            "first_interval": {k: rows[0].get(k) for k in THROUGHPUT},
            "last_interval": {k: rows[-1].get(k) for k in THROUGHPUT},
            "median_after_first": {k: median(k) for k in THROUGHPUT}}
result = {"dry_run": dry, "num_gpus": ngpu, "runs": runs}
if not dry:
    import torch
    result["gpu"] = torch.cuda.get_device_name(0)
    bench = out / "bench.json"
    if bench.exists():
        entries = json.loads(bench.read_text())["entries"]
        train = entries.get("train_step", {})
        result["bench_train_step"] = {k: train.get(k) for k in ("tokens_per_s", "mfu", "ratio", "config")}
        compiled = entries.get("train_compiled", {})
        result["bench_train_compiled"] = {k: compiled.get(k) for k in ("speedup", "ratio", "compile_s", "equal")}
    for run in ("single", "compiled", "ddp", "fsdp"):
        runs[run]["metrics"] = last_metrics(run)
    results = out / "eval" / "results.json"
    if results.exists():
        runs["eval"]["results"] = json.loads(results.read_text())
    for run in ("syncs", "syncs_old"):  # host reads per step and step times (frozen.train.hostsync)
        path = out / f"{run}.json"
        if path.exists():
            report = json.loads(path.read_text())
            runs[run]["summary"] = {k: v for k, v in report.items() if k != "per_step"}
            s = runs[run]["summary"]
            print(f"{run}: host reads per step without logging {s['reads_per_quiet_step']}, with logging "
                  f"{s['reads_per_logging_step']} ([reads, steps]); other libraries {s['other_reads_per_step']}; "
                  f"{s['seconds_per_step']} s/step, median {s['median_step_seconds']} s")
    pace = [runs[r].get("summary", {}).get("seconds_per_step") for r in ("syncs", "syncs_old")]
    if all(pace):
        result["syncs_speedup"] = pace[1] / pace[0]
        print(f"steps without the waits: {pace[1] / pace[0]:.3f}x the speed of steps that wait twice")
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"wrote {out / 'gpu_check.json'}")
PYEOF
