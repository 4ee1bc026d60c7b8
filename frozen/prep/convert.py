"""Converters from public annotation formats to shards (used by ``scripts/make_shards.py``).

* :func:`convert_coco` -- COCO captions JSON (``captions_train2017.json``) or Karpathy split JSON
  (``dataset_coco.json``; train + restval -> train, val, test), one sample per image-caption pair
  or per image with all captions.
* :func:`convert_vqa` -- VQAv2 / OK-VQA questions (+ annotations) JSON, one sample per question.
* :func:`convert_captions` -- any CSV/TSV/JSONL/JSON table of (image path, caption).

Each writes ``{out}/{prefix}-{i:06d}.tar`` shards (see :mod:`frozen.prep.shards`) and returns a
:class:`~frozen.prep.shards.ConvertReport`; items that cannot be converted are counted by reason.
Training splits are shuffled (seeded) at conversion, because the loader's shuffle buffer only mixes
nearby samples.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from frozen.errors import DataError
from frozen.prep.shards import (
    DEFAULT_MAX_COUNT,
    DEFAULT_MAX_SIZE,
    ConvertReport,
    ShardSink,
    Track,
    make_key,
    no_track,
    read_image_file,
)

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
Sample = tuple[str, dict[str, Any]]  # (key, {extension: content})


@dataclass
class WriteOptions:
    """Options shared by all converters."""

    max_count: int = DEFAULT_MAX_COUNT  # samples per shard
    max_size: int = DEFAULT_MAX_SIZE  # bytes per shard
    limit: int | None = None  # at most this many images (captions) / questions (VQA) per split
    shuffle: bool = True  # shuffle the sample order of training splits
    seed: int = 0
    verify: bool = False  # fully decode every image (slower) instead of the cheap byte checks
    track: Track = no_track


def write_samples(report: ConvertReport, out_dir: str | Path, prefix: str, items: Sequence[Any],
           make_sample: Callable[[Any], Sample | str], opts: WriteOptions) -> None:
    """Write ``make_sample(item)`` for each item to ``prefix`` shards; string results are skip reasons."""
    if opts.shuffle and prefix.endswith("-train"):
        items = list(items)
        random.Random(opts.seed).shuffle(items)
    sink = ShardSink(out_dir, prefix, max_count=opts.max_count, max_size=opts.max_size)
    for item in opts.track(items, prefix, len(items)):
        sample = make_sample(item)
        if isinstance(sample, str):
            report.skipped[sample] += 1
        else:
            sink.write(*sample)
    report.add_sink(sink)


def _load_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"annotation file {str(path)!r} not found; download it first (scripts/download_*.sh)") from None


def _split_from_name(name: str) -> str:
    """``captions_train2017.json`` -> ``train``; ``test-dev2015`` -> ``testdev``."""
    for split in ("train", "val", "test-dev", "test"):
        if re.search(rf"(^|[^a-z]){split}\d*([^a-z]|$)", name.lower()):
            return split.replace("-", "")
    raise DataError(f"cannot tell the split of {name!r}; pass --split train|val|test")


# --------------------------------------------------------------------------------------------
# COCO captions


@dataclass
class CaptionImage:
    image_id: int | str
    path: Path
    file_name: str  # relative to the image root, stored in the json for provenance
    captions: list[tuple[int | str, str]]  # (caption id, caption)


def load_coco_captions(annotations: str | Path, image_root: str | Path,
                       split: str | None = None) -> dict[str, list[CaptionImage]]:
    """Images with their captions per output split, sorted by image id.

    Official COCO JSON: a single split, named by ``split`` or from the file name. Karpathy JSON
    (``{"images": [{"split", "filepath", "filename", "sentences": [{"raw"}]}]}``, also the Flickr
    ones): every split in the file, restval merged into train; ``split`` keeps just that one.
    """
    data, root = _load_json(annotations), Path(image_root)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{annotations}: not a COCO captions or Karpathy JSON (no 'images' list)")
    out: dict[str, list[CaptionImage]] = defaultdict(list)
    if "annotations" in data:  # official COCO captions format
        captions: dict[Any, list[tuple[int | str, str]]] = defaultdict(list)
        for ann in data["annotations"]:
            captions[ann["image_id"]].append((ann.get("id", len(captions[ann["image_id"]])), ann["caption"]))
        name = split or _split_from_name(Path(annotations).name)
        for im in images:
            out[name].append(CaptionImage(im["id"], root / im["file_name"], im["file_name"],
                                          sorted(captions.get(im["id"], []))))
    elif images and "sentences" in images[0]:  # Karpathy split format
        for im in images:
            name = KARPATHY_SPLITS.get(im["split"], im["split"])
            rel = str(Path(im.get("filepath", "")) / im["filename"])
            image_id = im.get("cocoid", im.get("imgid"))
            caps = [(s.get("sentid", i), s["raw"]) for i, s in enumerate(im["sentences"])]
            out[name].append(CaptionImage(image_id, root / rel, rel, caps))
        if split is not None:
            out = defaultdict(list, {split: out.get(split, [])})
    else:
        raise DataError(f"{annotations}: neither COCO ('annotations') nor Karpathy ('sentences') captions JSON")
    return {name: sorted(recs, key=lambda r: (isinstance(r.image_id, str), r.image_id)) for name, recs in out.items()}


def _id_str(value: int | str, width: int) -> str:
    return f"{value:0{width}d}" if isinstance(value, int) else str(value)


def convert_coco(annotations: str | Path, image_root: str | Path, out_dir: str | Path, *,
                 split: str | None = None, per_image: bool = False,
                 opts: WriteOptions | None = None) -> ConvertReport:
    """COCO/Karpathy captions -> ``captions-{split}`` shards.

    Per pair: ``{key}.jpg``, ``{key}.txt`` (the caption), ``{key}.json`` (image_id, caption_id,
    caption, file_name, split). Per image: ``{key}.jpg`` + ``{key}.json`` with ``captions`` (list).
    """
    opts = opts or WriteOptions()
    report = ConvertReport(str(out_dir))
    for name, records in load_coco_captions(annotations, image_root, split).items():
        records = records[: opts.limit] if opts.limit is not None else records
        items: list[tuple[CaptionImage, int | None]]
        items = [(r, None) for r in records] if per_image else [(r, i) for r in records for i in range(len(r.captions))]

        def make_sample(item: tuple[CaptionImage, int | None], name: str = name) -> Sample | str:
            record, index = item
            captions = [(cid, c.strip()) for cid, c in record.captions if c.strip()]
            if index is not None and not record.captions[index][1].strip():
                return "empty_caption"
            if not captions:
                return "empty_caption"
            image = read_image_file(record.path, verify=opts.verify)
            if isinstance(image, str):
                return image
            data, ext = image
            meta: dict[str, Any] = {"image_id": record.image_id, "file_name": record.file_name, "split": name}
            if index is None:
                meta |= {"captions": [c for _, c in captions], "caption_ids": [cid for cid, _ in captions]}
                return make_key("coco", _id_str(record.image_id, 12)), {ext: data, "json": json.dumps(meta)}
            cid, caption = record.captions[index][0], record.captions[index][1].strip()
            meta |= {"caption_id": cid, "caption": caption}
            key = make_key("coco", _id_str(record.image_id, 12), _id_str(cid, 7))
            return key, {ext: data, "txt": caption, "json": json.dumps(meta)}

        write_samples(report, out_dir, f"captions-{name}", items, make_sample, opts)
    return report


# --------------------------------------------------------------------------------------------
# VQAv2 / OK-VQA


def convert_vqa(questions: str | Path, annotations: str | Path | None, image_root: str | Path,
                out_dir: str | Path, *, split: str | None = None, image_pattern: str | None = None,
                opts: WriteOptions | None = None) -> ConvertReport:
    """VQA questions (+ annotations, absent for test splits) -> ``vqa-{split}`` shards.

    Each sample: the question's COCO image and ``{key}.json`` with ``question``, ``question_id``,
    ``image_id`` and, from the annotations, ``answers`` (all annotator strings),
    ``multiple_choice_answer``, ``answer_type``, ``question_type`` when present. Image files are
    ``image_root / image_pattern.format(image_id=...)``, by default the COCO name derived from the
    questions' ``data_subtype`` (``COCO_val2014_000000000042.jpg``).
    """
    opts = opts or WriteOptions()
    qdata = _load_json(questions)
    subtype = qdata.get("data_subtype")
    split = split or (_split_from_name(subtype) if subtype else _split_from_name(Path(questions).name))
    if image_pattern is None:
        if not subtype:
            raise DataError(
                f"{questions} has no data_subtype; pass --image-pattern 'COCO_val2014_{{image_id:012d}}.jpg'"
            )
        folder = "test2015" if subtype.startswith("test") else subtype  # test-dev images live in test2015
        image_pattern = f"COCO_{folder}_{{image_id:012d}}.jpg"
    answers_by_qid: dict[int, dict[str, Any]] | None = None
    if annotations is not None:
        answers_by_qid = {a["question_id"]: a for a in _load_json(annotations)["annotations"]}
    items = sorted(qdata["questions"], key=lambda q: q["question_id"])
    items = items[: opts.limit] if opts.limit is not None else items
    root = Path(image_root)

    def make_sample(q: dict[str, Any]) -> Sample | str:
        if not str(q.get("question", "")).strip():
            return "empty_question"
        meta: dict[str, Any] = {"question": q["question"].strip(), "question_id": q["question_id"],
                                "image_id": q["image_id"]}
        if answers_by_qid is not None:
            ann = answers_by_qid.get(q["question_id"])
            if ann is None:
                return "missing_annotation"
            meta["answers"] = [a["answer"] if isinstance(a, dict) else str(a) for a in ann.get("answers", [])]
            for name in ("multiple_choice_answer", "answer_type", "question_type"):
                if name in ann:
                    meta[name] = ann[name]
        image = read_image_file(root / image_pattern.format(image_id=q["image_id"]), verify=opts.verify)
        if isinstance(image, str):
            return image
        data, ext = image
        return make_key("vqa", q["question_id"]), {ext: data, "json": json.dumps(meta)}

    report = ConvertReport(str(out_dir))
    write_samples(report, out_dir, f"vqa-{split}", items, make_sample, opts)
    return report


# --------------------------------------------------------------------------------------------
# Any table of (image path, caption)

IMAGE_COLUMNS = ("image", "file_name", "filename", "filepath", "image_path", "path")
CAPTION_COLUMNS = ("caption", "text")


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.csv``/``.tsv`` (header row), ``.jsonl`` (one object per line) or ``.json`` (list)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"caption table {str(path)!r} not found")
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as f:
        if suffix in (".csv", ".tsv"):
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".jsonl":
            return [json.loads(line) for line in f if line.strip()]
        if suffix == ".json":
            rows = json.load(f)
            if isinstance(rows, list):
                return rows
    raise DataError(f"{path}: expected a .csv, .tsv, .jsonl or .json (list of objects) caption table")


def _pick_column(rows: list[dict[str, Any]], given: str | None, candidates: Iterable[str], what: str,
                 flag: str) -> str:
    columns = list(rows[0].keys()) if rows else []
    if given is not None:
        if rows and given not in columns:
            raise DataError(f"{what} column {given!r} not in the table (columns: {columns})")
        return given
    for name in candidates:
        if name in columns or not rows:
            return name
    raise DataError(f"no {what} column among {columns}; name it with {flag}")


def convert_captions(table: str | Path, out_dir: str | Path, *, split: str = "train", prefix: str = "captions",
                     image_column: str | None = None, caption_column: str | None = None,
                     image_root: str | Path | None = None, opts: WriteOptions | None = None) -> ConvertReport:
    """A table of (image path, caption) -> ``{prefix}-{split}`` shards (``.jpg/.png``, ``.txt``, ``.json``).

    Columns default to the first present of ``image``/``file_name``/... and ``caption``/``text``.
    Relative image paths are resolved against ``image_root``, by default the table's folder.
    """
    opts = opts or WriteOptions()
    rows = read_table(table)
    image_col = _pick_column(rows, image_column, IMAGE_COLUMNS, "image", "--image-column")
    caption_col = _pick_column(rows, caption_column, CAPTION_COLUMNS, "caption", "--caption-column")
    root = Path(image_root) if image_root is not None else Path(table).resolve().parent
    items = list(enumerate(rows))[: opts.limit] if opts.limit is not None else list(enumerate(rows))

    def make_sample(item: tuple[int, dict[str, Any]]) -> Sample | str:
        row_index, row = item
        caption = str(row.get(caption_col) or "").strip()
        if not caption:
            return "empty_caption"
        rel = str(row.get(image_col) or "").strip()
        if not rel:
            return "missing_image_file"
        image = read_image_file(root / rel, verify=opts.verify)  # absolute paths stay absolute
        if isinstance(image, str):
            return image
        data, ext = image
        meta = {"caption": caption, "image": rel, "row": row_index}
        return make_key(split, f"{row_index:09d}"), {ext: data, "txt": caption, "json": json.dumps(meta)}

    report = ConvertReport(str(out_dir))
    write_samples(report, out_dir, f"{prefix}-{split}", items, make_sample, opts)
    return report


__all__ = [
    "WriteOptions", "Sample", "write_samples", "CaptionImage", "load_coco_captions", "convert_coco", "convert_vqa",
    "read_table",
    "convert_captions", "KARPATHY_SPLITS",
]
