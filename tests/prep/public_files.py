"""Small files in the exact public schemas the converters read (field names and nesting as published).

Karpathy's ``dataset_coco.json`` / ``dataset_flickr8k.json``, COCO ``captions_val2014.json``,
VQAv2 / OK-VQA questions and annotations, Kaggle Flickr8k ``captions.txt``, the headerless
Conceptual Captions TSV and an img2dataset 1.47 output folder. Values are small and made up.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def save_image(path: Path, seed: int, fmt: str = "JPEG") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)).save(path, fmt)
    return path.read_bytes()


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def karpathy_image(imgid: int, split: str, filename: str, n_sentences: int, *, filepath: str | None = None,
                   cocoid: int | None = None) -> dict[str, Any]:
    """One ``images[]`` entry of a Karpathy split file (COCO: with filepath and cocoid; Flickr: without)."""
    sentences = [{"tokens": ["a", "picture", str(imgid), str(j)], "raw": f"A picture {imgid} {j}.", "imgid": imgid,
                  "sentid": imgid * 5 + j} for j in range(n_sentences)]
    image: dict[str, Any] = {"sentids": [s["sentid"] for s in sentences], "filename": filename, "imgid": imgid,
                             "split": split, "sentences": sentences}
    if filepath is not None:
        image["filepath"] = filepath
    if cocoid is not None:
        image["cocoid"] = cocoid
    return image


def coco_captions(images: list[int], captions: list[tuple[int, int, str]], subtype: str = "val2014") -> dict:
    """An official ``captions_{subtype}.json``: ``captions`` are (annotation id, image_id, caption)."""
    return {
        "info": {"description": "COCO 2014 Dataset", "url": "http://cocodataset.org", "version": "1.0", "year": 2014,
                 "contributor": "COCO Consortium", "date_created": "2017/09/01"},
        "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
                      "name": "Attribution-NonCommercial-ShareAlike License"}],
        "images": [{"license": 1, "file_name": f"COCO_{subtype}_{i:012d}.jpg",
                    "coco_url": f"http://images.cocodataset.org/{subtype}/COCO_{subtype}_{i:012d}.jpg",
                    "height": 12, "width": 20, "date_captured": "2013-11-14 16:28:13",
                    "flickr_url": "http://farm1.staticflickr.com/1/1.jpg", "id": i} for i in images],
        "annotations": [{"image_id": image_id, "id": ann_id, "caption": caption}
                        for ann_id, image_id, caption in captions],
    }


VQA_INFO = {"description": "This is v2.0 of the VQA dataset.", "url": "http://visualqa.org", "version": "2.0",
            "year": 2017, "contributor": "VQA Team", "date_created": "2017-04-26 17:07:13"}
VQA_LICENSE = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0"}


def vqa_questions(questions: list[tuple[int, int, str]], subtype: str | None = "val2014") -> dict:
    """A ``v2_OpenEnded_mscoco_{subtype}_questions.json``: ``questions`` are (question_id, image_id, text).
    ``subtype=None`` leaves out ``data_subtype`` (as some re-packaged copies do)."""
    data: dict[str, Any] = {"info": VQA_INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": VQA_LICENSE,
                            "data_subtype": subtype,
                            "questions": [{"image_id": i, "question": q, "question_id": qid}
                                          for qid, i, q in questions]}
    if subtype is None:
        del data["data_subtype"]
    return data


def vqa_annotation(question_id: int, image_id: int, answers: list[str], *, answer_type: str = "other",
                   question_type: str = "what") -> dict[str, Any]:
    counts = {a: answers.count(a) for a in answers}
    return {"question_type": question_type, "multiple_choice_answer": max(counts, key=counts.get),
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)],
            "image_id": image_id, "answer_type": answer_type, "question_id": question_id}


def vqa_annotations(annotations: list[dict[str, Any]], subtype: str = "val2014") -> dict:
    """A ``v2_mscoco_{subtype}_annotations.json``."""
    return {"info": VQA_INFO, "license": VQA_LICENSE, "data_subtype": subtype, "annotations": annotations,
            "data_type": "mscoco"}


def kaggle_flickr8k(root: Path, images: dict[str, int], captions_per_image: int = 5) -> Path:
    """Kaggle's Flickr8k layout: ``captions.txt`` (CSV, header ``image,caption``) next to ``Images/``."""
    lines = ["image,caption"]
    for name, seed in images.items():
        save_image(root / "Images" / name, seed)
        lines += [f'{name},"A dog, number {seed}, runs {j} ."' if j == 0 else f"{name},A dog runs {j} ."
                  for j in range(captions_per_image)]
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return root / "captions.txt"


def conceptual_captions_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """The headerless Conceptual Captions TSV: ``caption<TAB>url`` per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{caption}\t{url}\n" for caption, url in rows))
    return path


def img2dataset_folder(folder: Path, n: int) -> dict[str, bytes]:
    """An img2dataset 1.47 webdataset output folder: ``00000.tar`` ({key}.jpg/.txt/.json, keys of 9
    digits), ``00000.parquet`` (its metadata table; stand-in bytes, never parsed here) and
    ``00000_stats.json``. Returns every file's bytes, to check they are left untouched."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for i in range(n):
            key = f"{i:09d}"
            meta = {"url": f"http://example.com/{i}.jpg", "caption": f"web caption {i}", "key": key,
                    "status": "success",
                    "error_message": None, "width": 20, "height": 12, "original_width": 20, "original_height": 12,
                    "exif": "{}", "sha256": "0" * 64}
            buf = io.BytesIO()
            Image.fromarray(np.full((12, 20, 3), i, dtype=np.uint8)).save(buf, "JPEG")
            for ext, data in (("jpg", buf.getvalue()), ("txt", meta["caption"].encode()),
                              ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (folder / "00000.parquet").write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    stats = {"count": n + 1, "successes": n, "failed_to_download": 1, "failed_to_resize": 0, "duration": 1.5,
             "start_time": 1700000000.0, "end_time": 1700000001.5,
             "status_dict": {"success": n, "<urlopen error [Errno -2] Name or service not known>": 1}}
    write_json(folder / "00000_stats.json", stats)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# ------------------------------------------------------------------------------- reading back


def read_all(out: Path, prefix: str) -> dict[str, dict[str, bytes]]:
    """Raw samples of all ``prefix`` shards, checking sizes.json and key hygiene on the way."""
    from collections import Counter

    from frozen.data.samples import iter_shard

    sizes = json.loads((out / "sizes.json").read_text())
    samples: dict[str, dict[str, bytes]] = {}
    for name in sorted(n for n in sizes if n.startswith(prefix + "-") and n[len(prefix) + 1:][:6].isdigit()):
        counts: Counter = Counter()
        got = list(iter_shard(str(out / name), counts))
        assert not counts and len(got) == sizes[name]  # sizes.json counts what is in the tar
        for key, files in got:
            assert "." not in key and key not in samples  # tar-safe and unique
            samples[key] = files
    return samples


def eval_examples(out: Path, pattern: str) -> dict[str, Any]:
    """The pipeline's evaluation examples of ``pattern`` under ``out``, by key."""
    from frozen.data.pipeline import iter_eval_samples

    return {e.key: e for e in iter_eval_samples(pattern, data_root=str(out), image_size=8)}


def accounted(report: Any) -> int:
    """Records a report accounts for: written + skipped (every reason)."""
    return report.written() + sum(report.skipped.values())
