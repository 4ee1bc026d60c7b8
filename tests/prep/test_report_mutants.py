"""ConvertReport details that the accounting test leaves open (found by make mutate): shards taken from a sink,
zero counts, unused records, per-prefix counts, patterns, the summary without skips, details without examples
or hints, the reason that lost the most, and a run whose every record was excluded by --limit/--split."""

from __future__ import annotations

from frozen.prep.report import ConvertReport


class Sink:
    prefix = "vqa-train"

    def close(self):
        return {"vqa-train-000000.tar": 5, "vqa-train-000001.tar": 2}


def test_shards_counts_and_patterns():
    report = ConvertReport("out")
    report.add_sink(Sink())
    report.shards["caps"] = {"caps-000000.tar": 4}
    report.shards["empty"] = {}
    assert report.written() == 11 and report.written("vqa-train") == 7 and report.written("caps") == 4
    assert report.patterns() == {"vqa-train": "vqa-train-{000000..000001}.tar", "caps": "caps-000000.tar",
                                 "empty": None}


def test_zero_skips_count_nothing_and_unused_records_are_counted_apart():
    report = ConvertReport("out", shards={"p": {"p-000000.tar": 2}})
    report.skip("bad_json", "a.json", count=0)
    assert report.inputs == 0 and not report.skipped and report.examples == {}
    assert report.summary() == "written 2; skipped 0 (none)"
    for i in range(4):
        report.unuse("question_not_in_subset", f"q{i}")
    report.unuse("other", None)
    assert report.unused == {"question_not_in_subset": 4, "other": 1} and report.inputs == 0
    assert report.examples == {"question_not_in_subset": ["q0", "q1", "q2"], "other": []}
    assert report.summary() == "written 2; skipped 0 (none); unused 5 (other: 1, question_not_in_subset: 4)"
    assert report.failure(0.0) is None and report.lost() == 0


def test_details_and_the_reason_that_lost_the_most():
    report = ConvertReport("out", shards={"p": {"p-000000.tar": 10}})
    assert report.main_cause() is None
    report.skip("beyond_limit", count=50)  # the user's choice: never the main cause
    assert report.main_cause() is None
    report.skip("missing_image_file", count=2)
    report.skip("bad_caption", "row 7", count=3)
    report.hints["missing_image_file"] = "looked in --images 'x'"
    assert report.detail("missing_image_file") == "missing_image_file: 2 -- looked in --images 'x'"
    assert report.detail("bad_caption") == "bad_caption: 3, first: row 7"
    assert report.main_cause() == "bad_caption: 3, first: row 7"
    assert report.details() == ["bad_caption: 3, first: row 7", "missing_image_file: 2 -- looked in --images 'x'"]


def test_nothing_written():
    assert ConvertReport("out").failure(0.5) == "wrote nothing: the input holds no records"
    limited = ConvertReport("out")
    limited.skip("other_split", count=4)
    assert limited.failure(0.5) == "wrote nothing: the input holds no records (all excluded by --limit/--split)"
    lost = ConvertReport("out")
    lost.skip("bad_json", count=3)
    lost.skip("other_split", count=4)
    assert lost.failure(0.5) == "wrote nothing: 3 of 3 records skipped"
