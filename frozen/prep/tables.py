"""Any table of (image path, caption) -> caption shards, one sample per row.

CSV/TSV with a header row (or ``columns`` naming a headerless one, e.g. Conceptual Captions'
``caption<TAB>url``), JSONL or a JSON list; Kaggle's Flickr8k ``captions.txt`` is read as CSV.
Records: the table's rows. Rows that are malformed, have an empty caption, a URL instead of a
local image, or a missing/bad image file are counted by reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from frozen.errors import DataError
from frozen.prep.convert import Job, Sample, Skip, WriteOptions, add_image_hint, load_image, take, write_jobs
from frozen.prep.inputs import read_table
from frozen.prep.report import ConvertReport
from frozen.prep.shards import make_key

IMAGE_COLUMNS = ("image", "file_name", "filename", "filepath", "image_path", "path")
CAPTION_COLUMNS = ("caption", "text")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_DATA_LIKE = re.compile(r"(://|\.(jpe?g|png|gif|webp|bmp)$|\s\S+\s)", re.IGNORECASE)


def _pick(columns: list[str], given: str | None, candidates: Iterable[str], what: str,
          flag: str) -> tuple[str, str | None]:
    """``(column to use, None)``, or ``(given or "", problem)`` when it is not in the table."""
    if given is not None:
        return (given, None) if given in columns else (given, f"{flag} {given!r} is not a column")
    for name in candidates:
        if name in columns:
            return name, None
    return "", f"no {what} column ({'/'.join(candidates)}): name it with {flag}"


def convert_captions(table: str | Path, out_dir: str | Path, *, split: str = "train", prefix: str = "captions",
                     image_column: str | None = None, caption_column: str | None = None,
                     image_root: str | Path | None = None, fmt: str | None = None, columns: list[str] | None = None,
                     opts: WriteOptions | None = None) -> ConvertReport:
    """A table of (image path, caption) -> ``{prefix}-{split}`` shards (``.jpg/.png``, ``.txt``, ``.json``),
    keys ``{prefix}_{split}_{row:09d}``.

    Columns default to the first present of ``image``/``file_name``/... and ``caption``/``text``.
    Relative image paths are resolved against ``image_root``, by default the table's folder.
    """
    opts = opts or WriteOptions()
    report = ConvertReport(str(out_dir))
    data = read_table(table, fmt=fmt, columns=columns)
    image_col, image_problem = _pick(data.columns, image_column, IMAGE_COLUMNS, "image", "--image-column")
    caption_col, caption_problem = _pick(data.columns, caption_column, CAPTION_COLUMNS, "caption", "--caption-column")
    problems = [p for p in (image_problem, caption_problem) if p is not None]
    if problems and data.rows:
        headerless = any(_DATA_LIKE.search(c) for c in data.columns) and columns is None
        hint = ("; the first row looks like data, not a header: name the columns of a headerless table with "
                "--columns (e.g. --columns caption,url)") if headerless else ""
        raise DataError(f"--table {str(table)!r} (columns: {', '.join(data.columns)}): {'; '.join(problems)}{hint}")
    root = Path(image_root) if image_root is not None else Path(table).resolve().parent

    def make_sample(row_index: int) -> Sample | Skip:
        row = data.rows[row_index]
        if row is None:
            return Skip("malformed_row", data.bad[row_index])
        caption = str(row.get(caption_col) or "").strip()
        if not caption:
            return Skip("empty_caption", f"row {row_index}")
        rel = str(row.get(image_col) or "").strip()
        if not rel:
            return Skip("missing_image_file", f"row {row_index}: empty {image_col!r}")
        if _URL.match(rel):
            return Skip("image_is_url", rel)
        image = load_image(root, rel, opts.verify)  # absolute paths stay absolute
        if isinstance(image, Skip):
            return image
        content, ext = image
        meta: dict[str, Any] = {"caption": caption, "image": rel, "row": row_index}
        return make_key(prefix, split, f"{row_index:09d}"), {ext: content, "txt": caption, "json": json.dumps(meta)}

    report.hints["image_is_url"] = ("the table lists URLs, not local files: download the images with img2dataset "
                                    "first (docs/data.md, Conceptual Captions)")
    report.hints["malformed_row"] = "rows that do not parse as the table's format (quote fields that hold commas)"
    items = take(report, range(len(data.rows)), opts.limit)
    write_jobs(report, out_dir, [Job(f"{prefix}-{split}", items, make_sample)], opts)
    add_image_hint(report, root, "--image-root")
    return report


__all__ = ["convert_captions", "IMAGE_COLUMNS", "CAPTION_COLUMNS"]
