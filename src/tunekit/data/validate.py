"""Turn raw records into canonical rows, refusing bad ones loudly.

A silently dropped row changes what the model learns and what the test measures, so every bad row
is an error that names the file, the line, the column and the fix. Labels become strings here, once
(``3`` -> ``"3"``, ``1.0`` -> ``"1"``), so a label read from CSV and the same label read from
Parquet are one class, not two. For ``task: regression`` the label column holds the target, which
becomes a float here; text that is not a number, NaN and infinity are errors (a NaN target turns
the squared-error loss into NaN, and an infinite one makes every error metric infinite).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection
from typing import Any

from tunekit.config import DataConfig
from tunekit.data.problems import Problems
from tunekit.data.read import RawTable, Record
from tunekit.errors import DataError

MAX_LABELS_SHOWN = 10
META_PREFIX = "meta."  # metadata columns travel as "meta.<column>" so they never clash with id/text/label


def canonical_rows(table: RawTable, data: DataConfig, known_labels: Collection[str] | None = None,
                   regression: bool = False) -> list[dict]:
    """Canonical rows ``{id, text, [text_pair], label, _at}`` of ``table``; ``_at`` is "line 12" etc.

    With ``known_labels`` (the training labels), a label outside them is an error: the model could
    never predict it, and its rows would silently count as mistakes. With ``regression`` the label
    is a finite float (the target) and ``known_labels`` is not used.
    """
    check_columns(table, data)
    known = set(known_labels) if known_labels is not None else None
    problems = table.problems  # malformed records found while reading come first
    rows, seen_ids = [], {}
    for record in table.records:
        row = _canonical(record, table, data, known, problems, regression)
        if row is None:
            continue
        if row["id"] in seen_ids:
            problems.add(f'{table.path} {record.location}: column "{data.id_column}" has the id "{row["id"]}", which '
                         f"{seen_ids[row['id']]} has too; ids must be unique in a file (fix one, or remove `data.id_column`)")
            continue
        seen_ids[row["id"]] = record.location
        rows.append(row)
    problems.raise_if_any(str(table.path))
    return rows


def row_id(table: RawTable, record: Record) -> str:
    """The default id of a row: the split its file was given for, then the file (unless it is named
    after that split) and the line, e.g. ``train-12`` or ``train-tickets-12``; a file named
    ``test.csv`` given as ``data.train`` makes ``train-test-12``, never an id that reads as a test row."""
    role = table.key.rsplit(".", 1)[-1]
    stem = table.path.stem
    return f"{role}-{record.number}" if stem == role else f"{role}-{stem}-{record.number}"


def configured_columns(data: DataConfig) -> list[tuple[str, str]]:
    """(config key, column) for every column the config asks for."""
    pairs = [("data.text_column", column) for column in data.text_columns]
    if data.text_pair_column:
        pairs.append(("data.text_pair_column", data.text_pair_column))
    pairs.append(("data.label_column", data.label_column))
    if data.task_column:
        pairs.append(("data.task_column", data.task_column))
    if data.id_column:
        pairs.append(("data.id_column", data.id_column))
    pairs += [("data.metadata_columns", column) for column in data.metadata_columns]
    pairs += [("data.fallback_columns", column) for column in data.fallback_columns.values()]
    return pairs


def check_columns(table: RawTable, data: DataConfig) -> None:
    """Every configured column must exist; list what does exist and which key to change."""
    problems = Problems()
    where = " line 1 (header)" if table.format in ("csv", "tsv") and data.header else ""
    existing = ", ".join(f'"{c}"' for c in table.columns) or "(none)"
    for key, column in configured_columns(data):
        if column in table.columns:
            continue
        close = difflib.get_close_matches(column, table.columns, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        fix = f"change `{key}` to one of them" + (", or fix `data.columns`" if not data.header else "")
        problems.add(f'{table.path}{where}: column "{column}" (from `{key}`) not found{hint}; the file has columns {existing}: {fix}')
    problems.raise_if_any(str(table.path))


def _canonical(record: Record, table: RawTable, data: DataConfig, known: set[str] | None, problems: Problems,
               regression: bool = False) -> dict | None:
    where = f"{table.path} {record.location}"
    value = lambda column: _value(record.values, column, data.fallback_columns)  # noqa: E731
    texts = [_text(value(column), where, _named(column, data), problems) for column in data.text_columns]
    text = None if None in texts else data.text_separator.join(texts)  # type: ignore[arg-type]
    pair = _text(value(data.text_pair_column), where, _named(data.text_pair_column, data), problems) if data.text_pair_column else ""
    read_label = _target if regression else _label
    label = read_label(value(data.label_column), where, _named(data.label_column, data), problems)
    if label is not None and data.label_map is not None and not regression:
        label = _mapped(label, data.label_map, where, data.label_column, problems)
    if data.task_column and label is not None:  # multi-task: the label carries its task (tunekit.data.multitask)
        task = _text(record.values.get(data.task_column), where, data.task_column, problems)
        label = None if task is None else _namespaced(task.strip(), label, where, data.task_column, problems)
    if label is not None and known is not None and not regression and label not in known:
        problems.add(f'{where}: column "{data.label_column}" has label "{label}", which never appears in the training file; '
                     f"known labels: {_few(known)}. Fix the label, or add rows with it to the training file")
        return None
    if text is None or pair is None or label is None:
        return None
    row_key = _text(value(data.id_column), where, data.id_column, problems) if data.id_column else row_id(table, record)
    if row_key is None:
        return None
    row = {"id": row_key.strip(), "text": text}
    if data.text_pair_column:
        row["text_pair"] = pair
    row.update(label=label, _at=record.location)
    for column in data.metadata_columns:  # kept for slicing; a missing value is a slice of its own
        value = record.values.get(column)
        row[META_PREFIX + column] = "" if _is_missing(value) else _as_text(value)
    return row


def _value(values: dict, column: str, fallback: dict[str, str]) -> Any:
    """The row's value in ``column``, or in its fallback column (``data.fallback_columns``) when empty."""
    found = values.get(column)
    if _is_missing(found) and column in fallback:
        return values.get(fallback[column])
    return found


def _named(column: str, data: DataConfig) -> str:
    """A column as errors name it: with its fallback, when it has one."""
    other = data.fallback_columns.get(column)
    return f'{column}" and its fallback "{other}' if other else column


def _mapped(label: str, label_map: dict[str, str], where: str, column: str, problems: Problems) -> str | None:
    if label in label_map:
        return label_map[label]
    problems.add(f'{where}: column "{column}" has label "{label}", which `data.label_map` does not name (it maps '
                 f"{_few(label_map)}); add it to `data.label_map` or fix the row")
    return None


def _namespaced(task: str, label: str, where: str, column: str, problems: Problems) -> str | None:
    from tunekit.data.multitask import SEP

    if SEP in task:
        problems.add(f'{where}: column "{column}" has task "{task}", which contains "{SEP}" (it separates task and label); rename the task')
        return None
    return f"{task}{SEP}{label}"


def _text(value: Any, where: str, column: str, problems: Problems) -> str | None:
    """A non-blank string; numbers are accepted as their text, objects and lists are not."""
    if isinstance(value, (dict, list)):
        problems.add(f'{where}: column "{column}" holds {type(value).__name__} data, not text; put a string there')
        return None
    if _is_missing(value):
        problems.add(f'{where}: column "{column}" is empty; every row needs a text (fill it in, remove the row, '
                     "or name a column to use instead in `data.fallback_columns`)")
        return None
    return value if isinstance(value, str) else str(value)


def _label(value: Any, where: str, column: str, problems: Problems) -> str | None:
    """The label as a string: whitespace stripped, integral floats written as integers."""
    if isinstance(value, (dict, list)):
        problems.add(f'{where}: column "{column}" holds {type(value).__name__} data, not a label; put one label per row')
        return None
    if _is_missing(value):
        problems.add(f'{where}: column "{column}" (the label) is empty; every row needs a label (fill it in or remove the row)')
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _target(value: Any, where: str, column: str, problems: Problems) -> float | None:
    """The regression target as a finite float; numbers written as text (" 3.5", "1e3") are accepted."""
    if isinstance(value, (dict, list)):
        problems.add(f'{where}: column "{column}" holds {type(value).__name__} data, not a number; put one number per row (task: regression)')
        return None
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.add(f'{where}: column "{column}" (the target) is empty; every row needs a number (fill it in or remove the row)')
        return None
    if isinstance(value, bool):  # JSON true/false would pass as 1.0/0.0 and hide a wrong column
        problems.add(f'{where}: column "{column}" holds the boolean {str(value).lower()}, not a number; task regression needs a numeric target')
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        problems.add(f'{where}: column "{column}" holds {_short(value)!r}, which is not a number; task regression needs a numeric '
                     "target (check `data.label_column`, or use task: classification for labels)")
        return None
    if not math.isfinite(number):
        problems.add(f'{where}: column "{column}" is {number}; a regression target must be a finite number (fix or remove the row)')
        return None
    return number


def _as_text(value: Any) -> str:
    """A metadata value as text: JSON for objects and lists (a nested JSON record keeps its shape)."""
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _few(labels: Collection[str]) -> str:
    shown = sorted(labels)[:MAX_LABELS_SHOWN]
    more = f", ... ({len(labels)} in all)" if len(labels) > MAX_LABELS_SHOWN else ""
    return ", ".join(f'"{label}"' for label in shown) + more


def constant_target_error(path: str, value: float) -> DataError:
    """Training data whose target never varies gives a regression model nothing to learn."""
    return DataError(f"{path}: every training row has the target {value:g}; regression needs targets that vary "
                     "(check `data.label_column`)")


def label_set_error(path: str, labels: list[str]) -> DataError:
    """Training data with a single label cannot train a classifier."""
    return DataError(f'{path}: every training row has the label "{labels[0]}"; a classifier needs at least two labels '
                     "(check `data.label_column`)")
