"""Read one data file, in any supported format, into raw records that remember where they came from.

Every later error about a row ("line 412: column "label" is empty") needs the file and the line the
user can open in an editor, so the readers keep the *physical* line of each record: the csv module's
``line_num`` for CSV/TSV (a quoted field may span lines, so a record starts one line after the
previous record ended), the line of each object in JSON Lines and JSON, and the row number in
Parquet, which has no lines. Nothing here judges the values; ``validate.py`` does that.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunekit.config import DataConfig
from tunekit.data.problems import Problems
from tunekit.errors import DataError

FORMATS_BY_SUFFIX = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "json", ".parquet": "parquet", ".pq": "parquet",
}
ENCODING_HINT = "set `data.encoding` (e.g. latin-1 or cp1252) in the config, or re-save the file as UTF-8"


@dataclass(frozen=True)
class Record:
    """One row as found in the file: its values by column, and where it is ("line 12", "row 3")."""

    location: str
    number: int
    values: dict[str, Any]


@dataclass(frozen=True)
class RawTable:
    """The records of one file, the columns it has (header, or every key seen), and malformed records.

    Malformed records are kept as ``problems`` rather than raised at once, so that the user sees
    them together with the empty texts and missing labels ``validate.py`` finds in the same run.
    """

    path: Path
    format: str
    columns: list[str]
    records: list[Record]
    problems: Problems = field(default_factory=Problems)


def read_table(path: Path, data: DataConfig, key: str) -> RawTable:
    """Read ``path`` (named by config key ``key``, e.g. ``data.train``) into raw records."""
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path} (relative paths are relative to the config file's folder)")
    fmt = detect_format(path, data)
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"{path}: the file is empty (0 bytes); `{key}` must point at a file with labelled rows")
    if fmt == "parquet":
        table = _read_parquet(path)
    else:
        text = decode(raw, path, data.encoding)
        table = _TEXT_READERS[fmt](path, text, data)
    if not table.records:
        table.problems.raise_if_any(str(path))
        raise DataError(_no_rows_message(table, data, key))
    return table


def detect_format(path: Path, data: DataConfig) -> str:
    """The configured format, or the one the extension implies; guessing from content hides mistakes."""
    if data.format != "auto":
        return data.format
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS_BY_SUFFIX))
        raise DataError(
            f"{path}: cannot tell the file format from the extension {path.suffix or '(none)'!r} "
            f"(known: {known}); set `data.format` to one of csv, tsv, jsonl, json, parquet"
        )
    return fmt


def decode(raw: bytes, path: Path, encoding: str) -> str:
    """Decode the whole file up front, so a bad byte is reported with its line, not as a crash mid-way."""
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r} (reading {path}); use e.g. utf-8, latin-1 or cp1252") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        byte = raw[exc.start:exc.start + 1].hex()
        raise DataError(f"{path} line {line}: byte 0x{byte} is not valid {encoding}; {ENCODING_HINT}") from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark would otherwise glue onto the first column name


def _no_rows_message(table: RawTable, data: DataConfig, key: str) -> str:
    if table.format in ("csv", "tsv") and data.header:
        return f"{table.path}: has a header row (line 1) but no data rows; `{key}` must point at a file with labelled rows"
    return f"{table.path}: contains no rows; `{key}` must point at a file with labelled rows"


def _read_delimited(path: Path, text: str, data: DataConfig, delimiter: str, fmt: str) -> RawTable:
    """CSV/TSV via the csv module, which handles quoting and multi-line fields and counts lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = None if data.header else list(data.columns or [])
    records, problems, end = [], Problems(), 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields:
                continue  # a blank line is not a record
            if columns is None:
                columns = [name.strip() for name in fields]
            elif len(fields) != len(columns):
                problems.add(
                    f"{path} line {start}: expected {len(columns)} fields ({', '.join(columns)}), found {len(fields)}; "
                    f"check the delimiter ({delimiter!r}) and quote values that contain it"
                )
            else:
                records.append(Record(f"line {start}", start, dict(zip(columns, fields))))
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: cannot parse as {fmt.upper()}: {exc}; check quoting, or `data.format`") from None
    return RawTable(path, fmt, columns or [], records, problems)


def _read_csv(path: Path, text: str, data: DataConfig) -> RawTable:
    return _read_delimited(path, text, data, ",", "csv")


def _read_tsv(path: Path, text: str, data: DataConfig) -> RawTable:
    return _read_delimited(path, text, data, "\t", "tsv")


def _read_jsonl(path: Path, text: str, data: DataConfig) -> RawTable:
    """One JSON object per line; every bad line is collected, not only the first."""
    records, problems, columns = [], Problems(), {}
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(f"{path} line {number}: not valid JSON ({exc.msg} at character {exc.colno}); each line must be one object like {{\"text\": ..., \"label\": ...}}")
            continue
        if not isinstance(value, dict):
            problems.add(f"{path} line {number}: expected a JSON object {{...}}, found {_json_type(value)}")
            continue
        columns.update(dict.fromkeys(value))
        records.append(Record(f"line {number}", number, value))
    return RawTable(path, "jsonl", list(columns), records, problems)


def _read_json(path: Path, text: str, data: DataConfig) -> RawTable:
    """A JSON list of objects; each object is reported by record number and the line it starts on."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}); a .json data file must be a list of objects (or use JSON Lines, .jsonl)") from None
    if not isinstance(value, list):
        hint = f" with keys {', '.join(map(str, list(value)[:10]))}" if isinstance(value, dict) else ""
        raise DataError(f"{path} line 1: expected a JSON list of objects [{{...}}, ...], found {_json_type(value)}{hint}; put the rows in a top-level list")
    records, problems, columns = [], Problems(), {}
    for number, (line, item) in enumerate(zip(_array_item_lines(text), value), 1):
        if not isinstance(item, dict):
            problems.add(f"{path} record {number} (line {line}): expected a JSON object {{...}}, found {_json_type(item)}")
            continue
        columns.update(dict.fromkeys(item))
        records.append(Record(f"record {number} (line {line})", number, item))
    return RawTable(path, "json", list(columns), records, problems)


def _array_item_lines(text: str):
    """Yield the line each element of a (valid) top-level JSON array starts on."""
    decoder, counted, line = json.JSONDecoder(), 0, 1
    idx = _skip_space(text, text.index("[") + 1)
    while idx < len(text) and text[idx] != "]":
        line, counted = line + text.count("\n", counted, idx), idx
        yield line
        _, end = decoder.raw_decode(text, idx)
        idx = _skip_space(text, end)
        idx = _skip_space(text, idx + 1) if text[idx] == "," else idx


def _skip_space(text: str, idx: int) -> int:
    while idx < len(text) and text[idx] in " \t\r\n":
        idx += 1
    return idx


def _read_parquet(path: Path) -> RawTable:
    """Parquet has typed columns and no lines; records are numbered from 1 like rows in a sheet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); check the file or set `data.format`") from None
    records = [Record(f"row {n}", n, values) for n, values in enumerate(table.to_pylist(), 1)]
    return RawTable(path, "parquet", list(table.column_names), records)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_TEXT_READERS = {"csv": _read_csv, "tsv": _read_tsv, "jsonl": _read_jsonl, "json": _read_json}
