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
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunekit.config import ReadOptions
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
    key: str = "data.train"  # the config key that named the file; its last part is the split the rows are read for


def read_table(path: Path, options: ReadOptions) -> RawTable:
    """Read ``path`` (named by config key ``options.key``, e.g. ``data.train``) into raw records."""
    key = options.key
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path} (relative paths are relative to the config file's folder)")
    fmt = detect_format(path, options)
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"{path}: the file is empty (0 bytes); `{key}` must point at a file with labelled rows")
    if fmt == "parquet":
        table = _read_parquet(path)
    else:
        text = decode(raw, path, options.encoding, key)
        table = _TEXT_READERS[fmt](path, text, options)
    if not table.records:
        table.problems.raise_if_any(str(path))
        raise DataError(_no_rows_message(table, options, key))
    return replace(table, key=key)


def detect_format(path: Path, options: ReadOptions) -> str:
    """The configured format, or the one the extension implies; guessing from content hides mistakes."""
    if options.format != "auto":
        return options.format
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS_BY_SUFFIX))
        raise DataError(
            f"{path}: cannot tell the file format from the extension {path.suffix or '(none)'!r} "
            f"(known: {known}); set `data.format` (or `{options.key}.format`) to one of csv, tsv, jsonl, json, parquet"
        )
    return fmt


def decode(raw: bytes, path: Path, encoding: str, key: str = "data") -> str:
    """Decode the whole file up front, so a bad byte is reported with its line, not as a crash mid-way."""
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r} (reading {path}); use e.g. utf-8, latin-1 or cp1252") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        byte = raw[exc.start:exc.start + 1].hex()
        hint = ENCODING_HINT if key == "data" else f"{ENCODING_HINT} (for this file alone: `{key}.encoding`)"
        raise DataError(f"{path} line {line}: byte 0x{byte} is not valid {encoding}; {hint}") from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark would otherwise glue onto the first column name


def _no_rows_message(table: RawTable, options: ReadOptions, key: str) -> str:
    if table.format in ("csv", "tsv") and options.header:
        return f"{table.path}: has a header row (line 1) but no data rows; `{key}` must point at a file with labelled rows"
    return f"{table.path}: contains no rows; `{key}` must point at a file with labelled rows"


def quoting_of(fmt: str, options: ReadOptions) -> str:
    """`csv` (double quotes wrap fields) or `none` (quotes are text): `auto` is `none` for TSV, `csv` otherwise."""
    if options.quoting != "auto":
        return options.quoting
    return "none" if fmt == "tsv" else "csv"


def _read_delimited(path: Path, text: str, options: ReadOptions, fmt: str) -> RawTable:
    """CSV/TSV via the csv module, which counts lines; quoted (strict) or unquoted, never half of each.

    With quoting, a quote that breaks the rules (text after a closing quote, a quote that never
    closes) is an error naming the line rather than a field silently merged with the next ones.
    Without quoting, every line is one row and quotes are kept as they are.
    """
    delimiter = options.delimiter or ("\t" if fmt == "tsv" else ",")
    quoting = quoting_of(fmt, options)
    if quoting == "none":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    columns = None if options.header else list(options.columns or [])
    records, problems, end = [], Problems(), 0
    detected: bool | None = None  # whether the whole file parses with CSV quoting, looked at on the first bad row
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields:
                continue  # a blank line is not a record
            if columns is None:
                columns = [name.strip() for name in fields]
                continue
            if options.rest_in_last_column and quoting == "none" and len(fields) > len(columns) > 0:
                fields = [*fields[:len(columns) - 1], delimiter.join(fields[len(columns) - 1:])]
            if len(fields) != len(columns):
                if quoting == "none" and detected is None:
                    detected = _parses_quoted(text, delimiter, len(columns), options.header)
                problems.add(_field_count_problem(path, start, end, fields, columns, delimiter, quoting, options, detected))
            elif fmt == "tsv" and quoting == "csv" and end > start and _rows_of_their_own(text, start, end, delimiter, len(columns)):
                problems.add(f"{path} line {start}: the record runs on to line {end}, because a double quote opened a field that "
                             f"closes only there, but each of those lines is a complete row by itself; if quotes in this file are "
                             f"ordinary text, set `data.quoting: none` (or `{options.key}.quoting`), else close the quote")
            else:
                values = dict(zip(columns, fields))
                if quoting == "none" and options.quoting == "auto":
                    _check_csv_style(path, start, values, problems)
                records.append(Record(f"line {start}", start, values))
    except csv.Error as exc:
        raise DataError(_quote_error(path, fmt, end + 1, reader.line_num, str(exc), options)) from None
    return RawTable(path, fmt, columns or [], records, problems)


def _quote_error(path: Path, fmt: str, start: int, at: int, reason: str, options: ReadOptions) -> str:
    fix = f"if quotes in this file are ordinary text, set `data.quoting: none` (or `{options.key}.quoting`)"
    if "end of data" in reason:
        return (f"{path} line {start}: a double quote opens a field here that is still open at the end of the file (line {at}); "
                f"close the quote, or {fix}")
    return (f"{path} line {at}: cannot parse as {fmt.upper()} with quoting ({reason}): a field that starts with a double quote "
            f'must end with one right before the delimiter, and a quote inside it is written ""; fix the line, or {fix}')


def _rows_of_their_own(text: str, start: int, end: int, delimiter: str, width: int) -> bool:
    """Whether every physical line from ``start`` to ``end`` has exactly ``width`` fields when split plainly."""
    lines = text.split("\n")[start - 1:end]
    return all(len(line.rstrip("\r").split(delimiter)) == width for line in lines)


_CSV_QUOTED = re.compile(r'^"(?:[^"]|"")*""(?:[^"]|"")*"$', re.S)


def _check_csv_style(path: Path, line: int, values: dict[str, str], problems: Problems) -> None:
    """An unquoted TSV field that looks written by a CSV writer (wrapped in quotes, inner quotes doubled)
    would keep those quotes as text: ask which reading is meant instead of picking one."""
    for column, value in values.items():
        if _CSV_QUOTED.match(value):
            problems.add(f'{path} line {line}: column "{column}" is {_clip(value)}, wrapped in double quotes with doubled quotes inside, '
                         "as CSV writers quote; TSV is read without quoting by default, which would keep those quotes as text. "
                         "Set `data.quoting: csv` if the file was written with CSV quoting, or `data.quoting: none` to keep the quotes")
            return


def _parses_quoted(text: str, delimiter: str, width: int, header: bool) -> bool:
    """Whether ``text`` reads cleanly with CSV quoting: no quoting error and every record ``width`` fields wide."""
    try:
        records = [fields for fields in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True) if fields]
    except csv.Error:
        return False
    return all(len(fields) == width for fields in records[1 if header else 0:])


def _field_count_problem(path: Path, start: int, end: int, fields: list[str], columns: list[str], delimiter: str,
                         quoting: str, options: ReadOptions, detected: bool | None = None) -> str:
    head = f"{path} line {start}: expected {len(columns)} fields ({', '.join(columns)}), found {len(fields)}; "
    shown = "a tab" if delimiter == "\t" else repr(delimiter)
    if quoting == "none":
        seen = " (this file does read cleanly with CSV quoting)" if detected else ""
        return (head + f"this file is read without quoting (one row per line), so a text cannot hold the delimiter ({shown}) "
                f"or a line break: check the delimiter (`data.delimiter`) and the line; if the file wraps such fields in double "
                f"quotes, set `data.quoting: csv` (or `{options.key}.quoting`){seen}")
    if end > start:
        return (head + f"this record runs on to line {end}, because a double quote opened a field that closes only there; "
                f"if quotes in this file are ordinary text, set `data.quoting: none` (or `{options.key}.quoting`), else close the quote")
    return head + f"check the delimiter ({shown}, `data.delimiter`), and wrap values that contain it in double quotes"


def _clip(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit - 1] + "…")


def _read_csv(path: Path, text: str, options: ReadOptions) -> RawTable:
    return _read_delimited(path, text, options, "csv")


def _read_tsv(path: Path, text: str, options: ReadOptions) -> RawTable:
    return _read_delimited(path, text, options, "tsv")


def _read_jsonl(path: Path, text: str, options: ReadOptions) -> RawTable:
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


def _read_json(path: Path, text: str, options: ReadOptions) -> RawTable:
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
