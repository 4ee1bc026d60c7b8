"""scripts/make_shards.py: cheap checks first (all at once, one line each, exit 2, no traceback),
exit 1 when it wrote nothing or lost most of the input (naming paths and the likely cause), no
overwriting without --overwrite, other tools' output left alone."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from public_files import (
    eval_examples,
    img2dataset_folder,
    save_image,
    vqa_annotation,
    vqa_annotations,
    vqa_questions,
    write_json,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("make_shards", REPO / "scripts" / "make_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str) -> subprocess.CompletedProcess:
    """The script as a user runs it, importing this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_shards.py"), *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture
def vqa_files(tmp_path):
    """VQAv2 val files for 3 questions on images 1, 2, 3; only image 1's file exists."""
    save_image(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg", 1)
    q = write_json(tmp_path / "q.json", vqa_questions([(1000 * i, i, f"q{i}?") for i in (1, 2, 3)]))
    a = write_json(tmp_path / "a.json", vqa_annotations([vqa_annotation(1000 * i, i, ["x"] * 10) for i in (1, 2, 3)]))
    return q, a, tmp_path / "val2014"


def test_all_cheap_problems_at_once_without_traceback(tmp_path):
    (tmp_path / "out").write_text("a file")
    result = run_script("coco", "--annotations", str(tmp_path), "--images", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "out"), "--limit", "0", "--prefix", "a/b")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: --annotations {str(tmp_path)!r} is a folder; pass the file itself",
        f"error: --images {str(tmp_path / 'nope')!r} is not an existing folder; pass the folder that holds the images",
        f"error: --out {str(tmp_path / 'out')!r} is a file; pass a folder for the shards",
        "error: --limit must be >= 1, got 0",
        "error: --prefix 'a/b' may only hold letters, digits, '_' and '-' (it names shard files)",
    ]


def test_bad_input_files_are_one_line_exit_2(cli, vqa_files, tmp_path, capsys):
    q, a, images = vqa_files
    full = q.read_text()
    (tmp_path / "cut.json").write_text(full[:40])
    result = run_script("vqav2", "--questions", str(tmp_path / "cut.json"), "--images", str(images),
                        "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "is not valid JSON" in result.stderr and "truncated download" in result.stderr
    code = cli.main(["vqav2", "--questions", str(a), "--annotations", str(q), "--images", str(images),
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "were two arguments swapped?" in err
    assert not (tmp_path / "o").exists()


def test_wrong_images_folder_fails_with_the_folder_and_first_missing(cli, vqa_files, tmp_path, capsys):
    q, a, _ = vqa_files
    (tmp_path / "elsewhere").mkdir()
    code = cli.main(["vqav2", "--questions", str(q), "--annotations", str(a), "--images", str(tmp_path / "elsewhere"),
                     "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    detail = (f"missing_image_file: 3, first: COCO_val2014_000000000001.jpg, COCO_val2014_000000000002.jpg, "
              f"COCO_val2014_000000000003.jpg -- looked in --images {str(tmp_path / 'elsewhere')!r}; is --images the "
              "folder that holds 'COCO_val2014_000000000001.jpg'?")
    assert code == 1 and captured.err == f"error: wrote nothing: 3 of 3 records skipped; mostly {detail}\n"
    assert "written 0; skipped 3 (missing_image_file: 3)" in captured.out and f"  {detail}\n" in captured.out
    assert not list((tmp_path / "out").glob("*.tar"))


def test_partial_runs_name_the_missing_and_fail_above_the_threshold(cli, vqa_files, tmp_path, capsys):
    q, a, images = vqa_files
    out = tmp_path / "out"
    args = ["vqav2", "--questions", str(q), "--annotations", str(a), "--images", str(images), "--out", str(out)]
    assert cli.main(args) == 1  # 2 of 3 missing > 0.5
    captured = capsys.readouterr()
    assert captured.err.startswith("error: skipped 2 of 3 records (67%), more than --max-skip-fraction 0.5; "
                                   "the shards written are kept; mostly missing_image_file: 2, first: ")
    assert "first: COCO_val2014_000000000002.jpg, COCO_val2014_000000000003.jpg" in captured.out
    assert json.loads((out / "sizes.json").read_text()) == {"vqa-val-000000.tar": 1}
    # The same conversion again: refused, nothing touched; --overwrite with a looser threshold passes.
    before = (out / "vqa-val-000000.tar").read_bytes()
    assert cli.main([*args, "--max-skip-fraction", "0.7"]) == 2
    assert "already holds vqa-val-000000.tar (prefix 'vqa-val'); pass --overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--max-skip-fraction", "0.7", "--overwrite"]) == 0
    assert "written 1; skipped 2 (missing_image_file: 2)" in capsys.readouterr().out
    assert (out / "vqa-val-000000.tar").read_bytes() == before


def test_easyvqa_cli_summary_and_rerun(cli, tmp_path, capsys):
    assert cli.parse_size("500M") == 500_000_000 and cli.parse_size("2k") == 2000 and cli.parse_size("77") == 77
    out = tmp_path / "e"
    args = ["easyvqa", "--out", str(out), "--limit", "5", "--splits", "test", "--max-size", "1M"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "vqa-test" in printed and "written " in printed and "beyond_limit" in printed
    assert sorted(json.loads((out / "sizes.json").read_text())) == ["captions-test-000000.tar", "vqa-test-000000.tar"]
    assert cli.main(args) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite"]) == 0


def test_img2dataset_output_is_left_alone_and_read_as_is(cli, tmp_path, capsys):
    folder = tmp_path / "cc3m"
    before = img2dataset_folder(folder, 3)
    save_image(tmp_path / "mine" / "a.jpg", 1)
    (tmp_path / "mine" / "caps.csv").write_text("image,caption\na.jpg,mine\n")
    assert cli.main(["captions", "--table", str(tmp_path / "mine" / "caps.csv"), "--out", str(folder),
                     "--prefix", "mine"]) == 0
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in folder.iterdir()) == sorted([*before, "mine-train-000000.tar", "sizes.json"])
    examples = eval_examples(folder, "00000.tar")
    assert [examples[f"{i:09d}"].target for i in range(3)] == [" web caption 0", " web caption 1", " web caption 2"]


def test_full_disk_is_one_line_naming_the_shard_and_the_free_space(cli, vqa_files, tmp_path, capsys, monkeypatch):
    import errno

    import webdataset

    def full_disk(self, sample):
        raise OSError(errno.ENOSPC, "No space left on device")

    q, a, images = vqa_files
    out = tmp_path / "out"
    monkeypatch.setattr(webdataset.TarWriter, "write", full_disk)
    code = cli.main(["vqav2", "--questions", str(q), "--annotations", str(a), "--images", str(images),
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: cannot write {out / 'vqa-val-000000.tar.tmp'}: the disk is full (")
    assert f"free on {out}); no completed shard of 'vqa-val'; free space" in err
    assert list(out.iterdir()) == []


def test_full_disk_for_real_is_one_line_and_removes_the_unfinished_shard(vqa_files, tmp_path):
    """The same promise under a real write limit (RLIMIT_FSIZE: the tar writer's own OSError, EFBIG), not a stand-in."""
    from disklimit import run_limited

    q, a, images = vqa_files
    out = tmp_path / "out"
    proc = run_limited([str(REPO / "scripts" / "make_shards.py"), "vqav2", "--questions", str(q), "--annotations",
                        str(a), "--images", str(images), "--out", str(out)], max_bytes=1024, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: cannot write {out / 'vqa-val-000000.tar.tmp'}: the file is over the file "
                                  "size limit (ulimit -f) (")
    assert f"free on {out}); no completed shard of 'vqa-val'; free space" in proc.stderr
    assert list(out.iterdir()) == []
