"""``make mutate``: mutation testing (mutmut) of the modules whose numbers users publish or whose failure
loses work, each against only the tests that cover it, so that a module takes minutes, not hours.

For each module it stages a copy of the package and the tests in ``outputs/mutate/<name>/`` with a
``[tool.mutmut]`` section naming that module and its tests, runs ``mutmut run`` there, and prints one line
per module: killed / survived / timeout / no tests, with the survivors' names (``mutmut show NAME`` in that
folder prints a survivor's diff). docs/tests.md lists the last run's numbers and why each remaining survivor
is equivalent (no test can tell it from the original).

    python scripts/mutate.py                      # every module below
    python scripts/mutate.py eval/metrics eval/stats --max-children 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PACKING, COMPARE = "tests/model/test_packing.py", "tests/eval/test_compare.py"
# name -> (file mutated, the tests that cover it, mutant-name globs: only these functions' mutants run)
MODULES: dict[str, tuple[str, list[str], list[str]]] = {
    "eval/metrics": ("frozen/eval/metrics.py", ["tests/eval/test_metrics.py", "tests/eval/test_scoring.py"], []),
    "eval/stats": ("frozen/eval/stats.py", ["tests/eval/test_stats.py", "tests/eval/test_scoring.py"], []),
    "eval/answer": ("frozen/eval/answer.py", ["tests/eval/test_answer.py"], []),
    "eval/protocol": ("frozen/eval/protocol.py", ["tests/eval/test_compare_units.py"], []),
    # with the hand-written-folder tests of test_compare.py (the rest train and evaluate: minutes)
    "eval/compare": ("frozen/eval/compare.py", ["tests/eval/test_compare_units.py",
                                                f"{COMPARE}::test_a_folder_that_is_not_a_run_is_a_one_line_error",
                                                f"{COMPARE}::test_runs_with_the_same_folder_name_are_told_apart"], []),
    # the collation tests of test_packing.py (its LM-forward equality tests take seconds per mutant)
    "data/packing": ("frozen/data/packing.py", [f"{PACKING}::test_packed_collation_layout",
                                                f"{PACKING}::test_first_fit_decreasing_is_deterministic_and_fills_rows",
                                                "tests/data/test_packing_mutants.py"], []),
    "prep/report": ("frozen/prep/report.py", ["tests/prep/test_shards.py::test_report_summary_details_and_failure_"
                                              "rules", "tests/prep/test_report_mutants.py"], []),
    # the resume rules only (what is refused, what is recorded), not the checkpoint loading around them
    "train/resume": ("frozen/train/resume.py", ["tests/train/test_resume_mutants.py"],
                     ["frozen.train.resume.x__check_same_model__*", "frozen.train.resume.x__flat__*",
                      "frozen.train.resume.x__breaks_exact_resume__*", "frozen.train.resume.x__check_compatible__*"]),
}
STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "skipped", "segfault")


def stage(name: str, target: str, tests: list[str], out: Path) -> Path:
    """A fresh copy of the package, its configs and the chosen tests under ``out/name`` with mutmut's config."""
    work = out / name.replace("/", "_")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(REPO / "frozen", work / "frozen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "conf", work / "frozen" / "conf")  # the package's frozen.conf (package-dir in pyproject)
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "scripts", work / "scripts", ignore=shutil.ignore_patterns("__pycache__"))  # CLI tests
    present = [t for t in tests if (REPO / t.split("::")[0]).is_file()]
    toml = (REPO / "pyproject.toml").read_text()
    toml += ("\n[tool.mutmut]\n"
             'source_paths = ["frozen"]\n'
             f"only_mutate = {json.dumps([target])}\n"
             f"pytest_add_cli_args_test_selection = {json.dumps(present)}\n"
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
             'also_copy = ["scripts"]\n'
             "use_git_change_detection = false\n")
    (work / "pyproject.toml").write_text(toml)
    return work


def mutmut(work: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # forked workers: one thread each
           # no git repository: the suite's check that tests leave the working tree alone would otherwise look at
           # the checkout around the staging folder, whose edits are not the tests' doing
           "GIT_DIR": str(work / "no-git")}
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_module(name: str, out: Path, max_children: int, timeout: float) -> dict:
    target, tests, only = MODULES[name]
    work = stage(name, target, tests, out)
    start = time.monotonic()
    try:
        proc = mutmut(work, "run", "--max-children", str(max_children), *only, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"module": name, "error": f"over {timeout:.0f} s: skipped (raise --timeout)"}
    (work / "mutmut-run.log").write_text(proc.stdout + proc.stderr)
    listing = mutmut(work, "results", "--all", "true").stdout
    counts = dict.fromkeys(STATUSES, 0)
    survivors = []
    for line in listing.splitlines():
        key, _, status = line.strip().rpartition(": ")
        if not key or (only and not any(_glob(key, g) for g in only)):
            continue
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests", "suspicious"):
            survivors.append(f"{key} ({status})")
    if not sum(counts.values()):  # nothing ran: mutmut's own error (e.g. the tests fail unmutated) is in the log
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        return {"module": name, "error": f"mutmut failed (log: {work / 'mutmut-run.log'}): " + " | ".join(tail)}
    return {"module": name, **counts, "seconds": round(time.monotonic() - start), "survivors": survivors,
            "folder": str(work)}


def _glob(key: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(key, pattern)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    ap.add_argument("--out", default="outputs/mutate", help="staging folders and summary.json (default: %(default)s)")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per module before it is skipped")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}", file=sys.stderr)
        return 2
    if shutil.which("mutmut", path=str(Path(sys.executable).parent)) is None:
        print(f"mutmut is not installed in {sys.prefix}: pip install -e '.[dev]' (make install) installs it",
              file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    summary = []
    for name in args.modules or list(MODULES):
        row = run_module(name, out, args.max_children, args.timeout)
        summary.append(row)
        if "error" in row:
            print(f"{name}: {row['error']}", flush=True)
            continue
        print(f"{name}: killed {row['killed']}, survived {row['survived']}, timeout {row['timeout']}, "
              f"no tests {row['no tests']}, suspicious {row['suspicious']} ({row['seconds']} s)", flush=True)
        for s in row["survivors"]:
            print(f"    {s}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"summary: {out / 'summary.json'}; a survivor's diff: cd {out}/<module> && {sys.executable} -m mutmut show "
          "NAME")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
