"""The one door every converter input goes through: path checks, JSON schemas, caption tables.

Every file a converter reads is opened here, so a bad input (missing, a folder, truncated JSON,
the wrong file of a pair, wrong field types) becomes one :class:`~frozen.errors.DataError` line that
names the file, the flag it came from and what is wrong -- never a traceback. Whole-file problems
raise; a malformed *record* inside a good file is described by :func:`record_problem` and counted
by the converter (``malformed_record``), so one bad line does not lose the other million.

The schemas are those of the public files (field names and nesting as published): Karpathy's
``dataset_{coco,flickr8k,flickr30k}.json``, COCO ``captions_{train,val}{2014,2017}.json``,
VQAv2 / OK-VQA ``*_questions.json`` and ``*_annotations.json``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Container, Iterator, Sequence

from frozen.errors import DataError

if TYPE_CHECKING:
    from frozen.prep.report import ConvertReport


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({int: "integer", str: "string", list: "list", dict: "object"}.get(t, t.__name__) for t in types)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Schema:
    """A public JSON file's shape: required top-level keys, and the fields of its record list."""

    name: str  # "VQA questions file"
    example: str  # a public file of this kind, for messages
    keys: dict[str, tuple[type, ...]]  # required top-level keys -> allowed types
    records: str  # the top-level key holding the list of records
    fields: dict[str, tuple[type, ...]]  # required per-record fields -> allowed types
    optional: dict[str, tuple[type, ...]] = field(default_factory=dict)  # record fields checked when present
    top_optional: dict[str, tuple[type, ...]] = field(default_factory=dict)  # top-level keys checked when present


INT, STR, LIST = (int,), (str,), (list,)
KARPATHY = Schema("Karpathy split file", "dataset_coco.json", {"images": LIST}, "images",
                  {"filename": STR, "split": STR, "sentences": LIST, "imgid": INT},
                  {"filepath": STR, "cocoid": INT})
KARPATHY_SENTENCE: dict[str, tuple[type, ...]] = {"raw": STR}
COCO_CAPTIONS = Schema("COCO captions file", "captions_val2014.json", {"images": LIST, "annotations": LIST},
                       "annotations", {"image_id": INT, "caption": STR}, {"id": INT})
COCO_IMAGE: dict[str, tuple[type, ...]] = {"id": INT, "file_name": STR}
VQA_QUESTIONS = Schema("VQA questions file", "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": LIST},
                       "questions", {"image_id": INT, "question": STR, "question_id": INT},
                       top_optional={"data_subtype": STR})
VQA_ANNOTATIONS = Schema("VQA annotations file", "v2_mscoco_val2014_annotations.json", {"annotations": LIST},
                         "annotations", {"question_id": INT, "answers": LIST},
                         {"multiple_choice_answer": STR, "answer_type": STR, "question_type": STR, "image_id": INT},
                         {"data_subtype": STR})
SCHEMAS = (KARPATHY, COCO_CAPTIONS, VQA_QUESTIONS, VQA_ANNOTATIONS)


def _looks_like(data: dict[str, Any]) -> Schema | None:
    """The known schema whose top-level keys ``data`` has (COCO captions before VQA annotations)."""
    if "questions" in data:
        return VQA_QUESTIONS
    if "annotations" in data:
        return COCO_CAPTIONS if "images" in data else VQA_ANNOTATIONS
    if "images" in data and "dataset" in data:
        return KARPATHY
    return None


def check_file(path: str | Path, flag: str, what: str) -> Path:
    """``path`` as a Path if it is a readable file; else DataError naming ``flag`` and the problem."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{flag} {str(p)!r} is a folder; pass the {what} itself")
    if not p.exists():
        parent = "its folder exists" if p.parent.is_dir() else f"neither does its folder {str(p.parent)!r}"
        raise DataError(f"{flag} {str(p)!r} does not exist ({parent}); check the path")
    if not p.is_file():
        raise DataError(f"{flag} {str(p)!r} is not a regular file; pass the {what} file")
    return p


def parse_json(path: str | Path, flag: str, what: str) -> Any:
    """The parsed content of a JSON file; DataError (one line) when it is missing, a folder, not
    UTF-8 or not valid JSON (saying so when the file ends early: a truncated download)."""
    p = check_file(path, flag, what)
    where = f"{flag} {str(p)!r}"
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where} is not UTF-8 text; is it an archive or an image? pass the {what}") from None
    except OSError as exc:
        raise DataError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # A cut file fails at its end, or in a string that runs to the end.
        cut = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        end = "; the file ends early: a truncated download? fetch it again" if cut else ""
        raise DataError(f"{where} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}){end}") from None


def check_keys(data: Any, schema: Schema, where: str) -> dict[str, Any]:
    """``data`` if it is a ``schema`` object (top-level keys and their types), else DataError.

    A file of another known kind is named for what it is ("... looks like a VQA annotations file:
    were two arguments swapped?").
    """
    if not isinstance(data, dict):
        raise DataError(f"{where} holds a JSON {_json_type(data)}, not the object of a {schema.name} "
                        f"(like {schema.example})")
    missing = [k for k in schema.keys if k not in data]
    if missing:
        other = _looks_like(data)
        hint = (f"; it looks like a {other.name} (like {other.example}): were two arguments swapped?"
                if other is not None and other is not schema else f"; expected a {schema.name} like {schema.example}")
        raise DataError(f"{where} has no top-level {', '.join(repr(k) for k in missing)}{hint}")
    for key, types in (schema.keys | schema.top_optional).items():
        if key in data and not isinstance(data[key], types):
            found, wanted = _a(_json_type(data[key])), _a(_type_name(types))
            raise DataError(f"{where}: top-level {key!r} is {found}, expected {wanted}")
    return data


def load_json(path: str | Path, schema: Schema, flag: str) -> dict[str, Any]:
    """Parse ``path`` and check it is a ``schema`` file (:func:`parse_json` + :func:`check_keys`).

    Records are not checked here (see :func:`record_problem`).
    """
    return check_keys(parse_json(path, flag, schema.name), schema, f"{flag} {str(path)!r}")


def record_problem(record: Any, fields: dict[str, tuple[type, ...]], where: str,
                   optional: dict[str, tuple[type, ...]] | None = None) -> str | None:
    """What is wrong with one record (``"questions[3]: 'question_id' is a string, expected an integer"``), or None.

    ``bool`` is rejected where an integer is expected (JSON ``true`` is not an id).
    """
    if not isinstance(record, dict):
        return f"{where} is {_a(_json_type(record))}, expected an object"
    for name, types in fields.items():
        if name not in record:
            return f"{where}: no {name!r}"
    for name, types in (fields | (optional or {})).items():
        value = record.get(name)
        if name in record and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            return f"{where}: {name!r} is {_a(_json_type(value))}, expected {_a(_type_name(types))}"
    return None


def records_by_id(report: "ConvertReport", records: Sequence[Any], fields: dict[str, tuple[type, ...]], where: str,
                  id_field: str) -> dict[Any, dict[str, Any]]:
    """``records`` (the list ``where`` of a public JSON file) keyed by ``record[id_field]``, in order; a malformed
    record is counted as ``malformed_record`` and a repeated id as ``duplicate_record`` (the first one is kept)."""
    by_id: dict[Any, dict[str, Any]] = {}
    for i, record in enumerate(records):
        problem = record_problem(record, fields, f"{where}[{i}]")
        if problem is not None:
            report.skip("malformed_record", problem)
        elif record[id_field] in by_id:
            report.skip("duplicate_record", f"{where}[{i}]: {id_field} {record[id_field]} listed twice")
        else:
            by_id[record[id_field]] = record
    return by_id


def linked_records(report: "ConvertReport", data: dict[str, Any], schema: Schema, link: str, known: Container[Any],
                   orphan: Callable[[str, str], None], reason: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, record)`` of each well-formed record of ``data[schema.records]`` whose ``record[link]`` is in
    ``known``; a malformed record is counted as ``malformed_record``, one whose link is unknown is handed to
    ``orphan(reason, example)`` (``report.skip`` for a lost input, ``report.unuse`` for a companion file's record)."""
    where = schema.records
    for i, record in enumerate(data[where]):
        problem = record_problem(record, schema.fields, f"{where}[{i}]", schema.optional)
        if problem is not None:
            report.skip("malformed_record", problem)
        elif record[link] not in known:
            orphan(reason, f"{where}[{i}] ({link} {record[link]})")
        else:
            yield i, record


# --------------------------------------------------------------------------------------------
# Caption tables

TABLE_FORMATS = ("csv", "tsv", "jsonl", "json")


@dataclass
class Table:
    """Rows of a caption table; ``bad`` holds (row index, problem) of rows that could not be read."""

    rows: list[dict[str, Any] | None]  # None where the row is malformed (see ``bad``)
    columns: list[str]
    bad: dict[int, str] = field(default_factory=dict)


def table_format(path: Path, given: str | None) -> str:
    """The table format: ``given``, else from the suffix; ``.txt`` (Kaggle's ``captions.txt``) is
    CSV unless its first line has a tab."""
    if given is not None:
        return given
    suffix = path.suffix.lower().lstrip(".")
    if suffix in TABLE_FORMATS:
        return suffix
    if suffix == "txt":
        with open(path, encoding="utf-8", errors="replace") as f:
            return "tsv" if "\t" in f.readline() else "csv"
    raise DataError(f"--table {str(path)!r}: cannot tell the format from '.{suffix}'; pass --format "
                    f"{'|'.join(TABLE_FORMATS)}")


def read_table(path: str | Path, *, fmt: str | None = None, columns: list[str] | None = None) -> Table:
    """A ``.csv``/``.tsv`` (header row, or ``columns`` for a headerless one), ``.jsonl`` or ``.json`` table.

    A CSV/TSV row with more or fewer fields than the header, or a JSONL line that is not an
    object, is kept as ``None`` and described in ``Table.bad`` (the converter counts it).
    """
    p = check_file(path, "--table", "caption table")
    kind = table_format(p, fmt)
    if columns and kind not in ("csv", "tsv"):
        raise DataError(f"--columns names the columns of a headerless CSV/TSV; --table {str(p)!r} is {kind.upper()}, "
                        f"whose rows name their fields")
    bad: dict[int, str] = {}
    rows: list[dict[str, Any] | None] = []
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheet exports start with a BOM
            if kind in ("csv", "tsv"):
                reader = csv.reader(f, delimiter="\t" if kind == "tsv" else ",")
                header = list(columns) if columns else next(reader, [])
                for values in reader:
                    if not values:
                        continue
                    if len(values) != len(header):
                        bad[len(rows)] = f"line {reader.line_num}: {len(values)} fields, header has {len(header)}"
                        rows.append(None)
                    else:
                        rows.append(dict(zip(header, values)))
                return Table(rows, header, bad)
            if kind == "jsonl":
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        row, problem = None, f"line {number}: not JSON ({exc.msg})"
                    else:
                        problem = None if isinstance(row, dict) else f"line {number}: not a JSON object"
                    if problem is not None:
                        bad[len(rows)] = problem
                        row = None
                    rows.append(row)
            else:
                try:
                    data = json.load(f)
                except json.JSONDecodeError as exc:
                    raise DataError(f"--table {str(p)!r} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
                if not isinstance(data, list):
                    raise DataError(f"--table {str(p)!r} holds a JSON {_json_type(data)}; expected a list of objects")
                for i, row in enumerate(data):
                    if not isinstance(row, dict):
                        bad[i] = f"item {i}: a {_json_type(row)}, not an object"
                    rows.append(row if isinstance(row, dict) else None)
    except UnicodeDecodeError:
        raise DataError(f"--table {str(p)!r} is not UTF-8 text; pass a CSV/TSV/JSONL/JSON table") from None
    except csv.Error as exc:
        raise DataError(f"--table {str(p)!r}: unreadable {kind.upper()} ({exc})") from None
    keys = list(dict.fromkeys(k for row in rows if row is not None for k in row))
    return Table(rows, keys, bad)


__all__ = [
    "Schema", "KARPATHY", "KARPATHY_SENTENCE", "COCO_CAPTIONS", "COCO_IMAGE", "VQA_QUESTIONS", "VQA_ANNOTATIONS",
    "SCHEMAS", "check_file", "parse_json", "check_keys", "load_json", "record_problem", "records_by_id",
    "linked_records", "Table",
    "read_table", "table_format", "TABLE_FORMATS",
]
