"""Shard writing (frozen.prep.shards): rotation, reproducibility, key hygiene, never replacing
shards without --overwrite, sizes.json, and the report's accounting and failure rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frozen.errors import DataError
from frozen.prep.report import ConvertReport
from frozen.prep.shards import ShardSink, check_free, make_key

PAYLOAD = {"txt": "x" * 100, "bin": b"\0" * 1000}  # 512 + 512 + 512 + 1024 = 2560 tar bytes


def write(out: Path, prefix: str = "s", n: int = 7, **kwargs) -> dict[str, int]:
    with ShardSink(out, prefix, **kwargs) as sink:
        for i in range(n):
            sink.write(f"k{i}", PAYLOAD)
    return json.loads((out / "sizes.json").read_text())


def test_make_key_is_tar_safe():
    assert make_key("coco", "000000000042", 7) == "coco_000000000042_7"
    assert make_key("a.b/c d", 1.5) == "a-b-c-d_1-5"


def test_sink_rotates_by_count_and_size_and_is_reproducible(tmp_path):
    assert list(write(tmp_path / "a", max_count=3).values()) == [3, 3, 1]
    assert list(write(tmp_path / "b", max_size=2560 * 2).values()) == [2, 2, 2, 1]
    assert list(write(tmp_path / "c", max_size=10).values()) == [1] * 7  # oversized: one sample each
    write(tmp_path / "d", max_count=3)
    assert (tmp_path / "a" / "s-000000.tar").read_bytes() == (tmp_path / "d" / "s-000000.tar").read_bytes()


def test_sink_refuses_existing_shards_unless_overwrite(tmp_path):
    write(tmp_path, max_count=3)  # s-000000..000002
    write(tmp_path, "other", n=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DataError, match=r"already holds s-000000\.tar and 2 more .*--overwrite"):
        write(tmp_path, max_count=5)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched
    # With --overwrite a smaller re-run replaces the prefix's shards and removes the extra one;
    # the other prefix and its sizes.json entry stay.
    write(tmp_path, max_count=5, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["other-000000.tar", "s-000000.tar", "s-000001.tar"]
    assert json.loads((tmp_path / "sizes.json").read_text()) == {
        "other-000000.tar": 1, "s-000000.tar": 5, "s-000001.tar": 2}
    # A prefix that only starts like another one is a different prefix.
    write(tmp_path, "s-x", n=1)
    assert (tmp_path / "s-000001.tar").exists()


def test_check_free_rejects_a_file_as_out_and_a_broken_sizes_json(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="--out .* is a file"):
        check_free(tmp_path / "f", ["s"])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "sizes.json").write_text('{"s-000000.tar": 3')
    with pytest.raises(DataError, match="sizes.json.* not readable JSON.*fix or delete"):
        check_free(tmp_path / "d", ["s"])
    check_free(tmp_path / "new", ["s"])  # a folder that does not exist yet is fine


def test_sink_rejects_bad_and_duplicate_keys(tmp_path):
    with ShardSink(tmp_path, "s") as sink:
        with pytest.raises(ValueError, match="must not contain"):
            sink.write("a.b", {"txt": "x"})
        sink.write("a", {"txt": "x"})
        with pytest.raises(ValueError, match="duplicate"):
            sink.write("a", {"txt": "y"})


def test_report_summary_details_and_failure_rules():
    report = ConvertReport("out", shards={"p": {"p-000000.tar": 4}})
    report.inputs = 4
    for i in range(3):
        report.skip("missing_image_file", f"img{i}.jpg")
    report.skip("missing_image_file", "img3.jpg")  # only the first 3 examples are kept
    report.skip("beyond_limit", count=100)
    report.hints["missing_image_file"] = "looked in --images 'x'"
    assert report.inputs == 108 and report.lost() == 4
    assert report.summary() == "written 4; skipped 104 (beyond_limit: 100, missing_image_file: 4)"
    assert report.details() == ["missing_image_file: 4, first: img0.jpg, img1.jpg, img2.jpg -- looked in --images 'x'"]
    assert report.failure(0.5) is None  # 4 lost of 8 considered: 50% is not more than 0.5
    assert "skipped 4 of 8 records (50%)" in report.failure(0.4)
    empty = ConvertReport("out")
    empty.skip("missing_image_file", "a.jpg", count=6)
    assert empty.failure(1.0) == "wrote nothing: 6 of 6 records skipped"
    assert ConvertReport("out").failure(0.5) == "wrote nothing: the input holds no records"


def test_mostly_names_the_reason_that_lost_the_most_records():
    """make_shards' "mostly X": the largest count of lost records, not the first or last reason by name, and
    never a requested skip (--limit), however many it skipped."""
    report = ConvertReport("out")
    for reason, count in (("bad_json", 2), ("missing_image_file", 5), ("zero_size_image", 1), ("beyond_limit", 50)):
        report.skip(reason, f"{reason}-1", count=count)
    assert report.main_cause() == "missing_image_file: 5, first: missing_image_file-1"
    report.skip("zero_size_image", count=6)  # now 7: the most
    assert report.main_cause() == "zero_size_image: 7, first: zero_size_image-1"
    assert ConvertReport("out").main_cause() is None


def _full_disk_after(monkeypatch, writes: int) -> None:
    """TarWriter.write raises ENOSPC once ``writes`` samples went through."""
    import errno

    import webdataset

    original, count = webdataset.TarWriter.write, [0]

    def write(self, sample):
        count[0] += 1
        if count[0] > writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, sample)

    monkeypatch.setattr(webdataset.TarWriter, "write", write)


def test_full_disk_keeps_completed_shards_and_removes_the_one_in_progress(tmp_path, monkeypatch):
    from frozen.errors import WriteError

    write(tmp_path, "other", n=2)
    sizes_before = (tmp_path / "sizes.json").read_bytes()
    _full_disk_after(monkeypatch, 4)
    with pytest.raises(WriteError) as err:
        write(tmp_path, max_count=3)  # s-000000 (3 samples) complete, s-000001 fails at its 2nd sample
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"cannot write {tmp_path / 's-000001.tar.tmp'}: the disk is full (")
    assert f" free on {tmp_path})" in line and "kept 1 completed shard(s) s-000000.tar" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-000000.tar", "s-000000.tar", "sizes.json"]
    assert (tmp_path / "sizes.json").read_bytes() == sizes_before
    monkeypatch.undo()
    reference = tmp_path / "ref"
    write(reference, max_count=3)
    assert (tmp_path / "s-000000.tar").read_bytes() == (reference / "s-000000.tar").read_bytes()


def test_read_only_folder_for_sizes_json_is_one_line(tmp_path, monkeypatch):
    import errno

    from frozen.errors import WriteError

    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(WriteError, match=r"sizes\.json: the file system is read-only \(.* free on .*\); the "
                                         r"shards are complete; sizes\.json is as it was"):
        write(tmp_path, n=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-000000.tar"]
