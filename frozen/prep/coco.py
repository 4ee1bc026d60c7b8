"""COCO-style captions -> caption shards: official COCO ``captions_*.json`` and Karpathy's split files.

Karpathy's ``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json`` carry every
split (train + restval -> train, val, test); the official COCO file is one split. One sample per
image-caption pair (records: captions, plus images that have none) or, with ``per_image``, one per
image with all its captions (records: images, plus captions whose image is not listed). Keys and
the default prefix carry the data set's name (``coco_...``, ``flickr8k_...``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frozen.core.text import unicode_problem
from frozen.errors import DataError
from frozen.prep.convert import Job, Sample, Skip, WriteOptions, add_image_hint, load_image, take, write_jobs
from frozen.prep.inputs import (
    COCO_CAPTIONS,
    COCO_IMAGE,
    INT,
    KARPATHY,
    KARPATHY_SENTENCE,
    check_keys,
    linked_records,
    parse_json,
    record_problem,
    records_by_id,
)
from frozen.prep.report import ConvertReport
from frozen.prep.shards import make_key

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
SPLIT_WORDS = ("train", "val", "test-dev", "test")


def split_from_name(name: str) -> str | None:
    """``captions_train2017.json`` -> ``train``; ``test-dev2015`` -> ``testdev``; None if none is named."""
    for split in SPLIT_WORDS:
        if re.search(rf"(^|[^a-z]){split}\d*([^a-z]|$)", name.lower()):
            return split.replace("-", "")
    return None


@dataclass
class CaptionImage:
    image_id: int
    file_name: str  # relative to the image root, stored in the json for provenance
    captions: list[tuple[int, str]]  # (caption id, caption)


def _official(data: dict[str, Any], report: ConvertReport) -> list[CaptionImage]:
    """Images of an official COCO captions file; malformed records, duplicate images and captions of
    unlisted images are counted."""
    images = {image_id: CaptionImage(image_id, im["file_name"], [])
              for image_id, im in records_by_id(report, data["images"], COCO_IMAGE, "images", "id").items()}
    for _, ann in linked_records(report, data, COCO_CAPTIONS, "image_id", images, report.skip, "caption_without_image"):
        image = images[ann["image_id"]]
        image.captions.append((ann.get("id", len(image.captions)), ann["caption"]))
    return sorted(images.values(), key=lambda r: r.image_id)


def _karpathy(data: dict[str, Any], report: ConvertReport) -> dict[str, list[CaptionImage]]:
    """Images of a Karpathy split file per output split; malformed records and duplicates counted."""
    out: dict[str, list[CaptionImage]] = {}
    seen: set[int] = set()
    for i, im in enumerate(data["images"]):
        problem = record_problem(im, KARPATHY.fields, f"images[{i}]", KARPATHY.optional)
        for j, sentence in enumerate(im["sentences"] if problem is None else []):
            problem = problem or record_problem(sentence, KARPATHY_SENTENCE, f"images[{i}].sentences[{j}]",
                                                {"sentid": INT})
        image_id = im.get("cocoid", im.get("imgid")) if problem is None else None
        if problem is not None:
            report.skip("malformed_record", problem)
        elif image_id in seen:
            report.skip("duplicate_record", f"images[{i}]: id {image_id} listed twice")
        else:
            seen.add(image_id)
            captions = [(s.get("sentid", j), s["raw"]) for j, s in enumerate(im["sentences"])]
            rel = (Path(im.get("filepath", "")) / im["filename"]).as_posix()
            out.setdefault(KARPATHY_SPLITS.get(im["split"], im["split"]), []).append(
                CaptionImage(image_id, rel, captions))
    return {name: sorted(recs, key=lambda r: r.image_id) for name, recs in out.items()}


def _records(image: CaptionImage, per_image: bool) -> int:
    """Input records one image stands for: itself (per image), else its captions (at least 1)."""
    return 1 if per_image else max(1, len(image.captions))


def convert_coco(annotations: str | Path, image_root: str | Path, out_dir: str | Path, *,
                 split: str | None = None, per_image: bool = False, prefix: str | None = None,
                 opts: WriteOptions | None = None) -> ConvertReport:
    """COCO/Karpathy captions -> ``{prefix}-{split}`` shards (prefix ``captions`` for COCO, else
    ``{dataset}-captions``).

    Per pair: ``{key}.jpg``, ``{key}.txt`` (the caption), ``{key}.json`` (image_id, caption_id,
    caption, file_name, split). Per image: ``{key}.jpg`` + ``{key}.json`` with ``captions`` (list).
    Official COCO files are one split, ``split`` or from the file name; in a Karpathy file
    ``split`` keeps one split (others counted as ``other_split``).
    """
    opts = opts or WriteOptions()
    report, root = ConvertReport(str(out_dir)), Path(image_root)
    where = f"--annotations {str(annotations)!r}"
    data = parse_json(annotations, "--annotations", "captions file")
    if isinstance(data, dict) and "annotations" in data:
        check_keys(data, COCO_CAPTIONS, where)
        name = split or split_from_name(Path(annotations).name)
        if name is None:
            raise DataError(f"cannot tell the split of {where} from its name; pass --split train|val|test")
        dataset, by_split = "coco", {name: _official(data, report)}
        if data["annotations"] and report.skipped["malformed_record"] >= len(data["annotations"]):
            report.hints["malformed_record"] = "no caption record is usable: is it a captions_*.json, not instances_*?"
    else:
        check_keys(data, KARPATHY, where)
        dataset = str(data.get("dataset", "coco"))
        present = {KARPATHY_SPLITS.get(im["split"], im["split"]) for im in data["images"]
                   if isinstance(im, dict) and isinstance(im.get("split"), str)}
        if split is not None and split not in present:
            listed = ", ".join(sorted(str(s) for s in present)) or "none"
            raise DataError(f"--split {split!r} is not in {where} (its splits: {listed}; restval is part of train)")
        by_split = _karpathy(data, report)
        for other in [s for s in by_split if split is not None and s != split]:
            report.skip("other_split", count=sum(_records(r, per_image) for r in by_split.pop(other)))
    prefix = prefix or ("captions" if dataset == "coco" else f"{dataset}-captions")
    jobs = []
    for name, records in by_split.items():
        for record in records:
            if not record.captions:
                report.skip("image_without_captions", record.file_name)
        records = take(report, [r for r in records if r.captions], opts.limit, lambda r: _records(r, per_image))
        items = [(r, None) for r in records] if per_image else [(r, i) for r in records for i in range(len(r.captions))]
        jobs.append(Job(f"{prefix}-{name}", items, _sample_maker(dataset, name, root, opts)))
    write_jobs(report, out_dir, jobs, opts)
    add_image_hint(report, root, "--images")
    return report


def _sample_maker(dataset: str, split: str, root: Path, opts: WriteOptions):
    def make_sample(item: tuple[CaptionImage, int | None]) -> Sample | Skip:
        record, index = item
        where = record.file_name + ("" if index is None else f" #{record.captions[index][0]}")
        captions = [(cid, c.strip()) for cid, c in record.captions if c.strip()]
        if not captions or (index is not None and not record.captions[index][1].strip()):
            return Skip("empty_caption", where)
        for cid, caption in captions if index is None else [record.captions[index]]:
            problem = unicode_problem(caption)
            if problem:
                return Skip("invalid_unicode", f"{where}: caption {cid} has {problem}")
        image = load_image(root, record.file_name, opts.verify)
        if isinstance(image, Skip):
            return image
        data, ext = image
        meta: dict[str, Any] = {"image_id": record.image_id, "file_name": record.file_name, "split": split}
        if index is None:
            meta |= {"captions": [c for _, c in captions], "caption_ids": [cid for cid, _ in captions]}
            return make_key(dataset, f"{record.image_id:012d}"), {ext: data, "json": json.dumps(meta)}
        cid, caption = record.captions[index][0], record.captions[index][1].strip()
        meta |= {"caption_id": cid, "caption": caption}
        key = make_key(dataset, f"{record.image_id:012d}", f"{cid:07d}")
        return key, {ext: data, "txt": caption, "json": json.dumps(meta)}

    return make_sample


__all__ = ["convert_coco", "CaptionImage", "KARPATHY_SPLITS", "split_from_name"]
