"""Fingerprints and frozen splits in the workspace.

Baseline, candidate and champion must be scored on identical test rows, also across runs days
apart, so the splits are made once and frozen as Parquet under ``datasets/<fingerprint[:16]>/``.
``datasets/index.json`` maps a *source key* (the bytes of every input file plus the data settings
that shape rows) to the fingerprint, so a later prepare on unchanged inputs loads the frozen splits
instead of re-reading and re-splitting; changed inputs get a new folder and old ones stay.
The fingerprint is a sha256 over canonical rows, so it names the data itself, whatever file
format or column names it came from.

A ``task: regression`` dataset stores its target as a float ``label`` column (no label names,
``labels.json`` is ``[]``) and says so in ``meta.json``; classification folders are unchanged.

Every task freezes the same way, through ``write_frozen``: one Parquet file per split plus
``labels.json`` and ``meta.json``, written into a temporary folder that is renamed into place, so a
crash never leaves half a split behind and a folder with ``meta.json`` is always complete.
Conversations (``task: generation``) are rows ``{id, messages: [{role, content, weight}], origin,
[meta]}`` (``conversation_table`` / ``conversation_rows``). Generation folders frozen before that
hold ``<split>.jsonl`` files; ``read_conversations`` still reads them, under the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import datasets

from tunekit import task_kinds
from tunekit.artifacts import Workspace
from tunekit.config import TunekitConfig
from tunekit.data.validate import META_PREFIX
from tunekit.errors import DataError

SPLITS = ("train", "validation", "test")
ROW_FIELDS = ("id", "text", "text_pair", "label")
STORE_VERSION = 1  # bump when canonical rows change meaning, so old source keys stop matching


@dataclass(frozen=True)
class SourceFile:
    """An input file in the role it plays (train, validation or test), with its content hash."""

    role: str
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Frozen:
    """Splits as stored: canonical rows (label names), datasets (label ids), and their provenance."""

    rows: dict[str, list[dict]]
    datasets: dict[str, datasets.Dataset]
    labels: list[str]
    fingerprint: str
    test_fingerprint: str
    directory: Path
    meta: dict


def source_files(cfg: TunekitConfig) -> list[SourceFile]:
    """The configured input files, hashed; a missing one names its config key."""
    out = []
    for role in SPLITS:
        value = cfg.data.file_path(role)
        if value is None:
            continue
        path = cfg.path(value)
        if not path.is_file():
            raise DataError(f"data.{role}: file not found: {path} (relative paths are relative to the config file's folder)")
        raw = path.read_bytes()
        out.append(SourceFile(role, path, hashlib.sha256(raw).hexdigest(), len(raw)))
    return out


def source_key(cfg: TunekitConfig, sources: list[SourceFile]) -> str:
    """sha256 over the input bytes and every data setting that changes the rows (not the paths)."""
    settings = cfg.data.model_dump(mode="json", exclude={"train", "validation", "test"})
    if settings.get("task_column") is None:  # single-task keys stay as they were before multi-task existed
        settings.pop("task_column", None)
    for name, default in LATER_SETTINGS.items():  # settings added later: at their default, keys stay as they were
        if settings.get(name) == default:
            settings.pop(name, None)
    own = {role: value.model_dump(mode="json", exclude={"path"}, exclude_none=True)
           for role in SPLITS if not isinstance(value := getattr(cfg.data, role), (str, type(None)))}
    if any(own.values()):
        settings["files"] = own
    unquoted = [s.role for s in sources if _unquoted(cfg, s)]
    if unquoted:  # TSV was once read with CSV quoting: splits frozen that way must not be reused
        settings["unquoted"] = unquoted
    blob = {"version": STORE_VERSION, "settings": settings, "files": {s.role: s.sha256 for s in sources}}
    if task_kinds.kind(cfg.task).numeric:  # the same file read as numbers makes other rows; classification keys stay as they were
        blob["task"] = "regression"
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


LATER_SETTINGS = {"delimiter": None, "quoting": "auto", "text_separator": " | ", "label_map": None, "id_column": None,
                  "fallback_columns": {}, "duplicates": None, "overlength_test": None,
                  "rest_in_last_column": False}


def _unquoted(cfg: TunekitConfig, source: SourceFile) -> bool:
    from tunekit.data.read import detect_format, quoting_of

    options = cfg.data.read_options(source.role)
    try:
        fmt = detect_format(source.path, options)
    except DataError:
        return False
    return fmt in ("csv", "tsv") and quoting_of(fmt, options) == "none"


def fingerprint(rows: dict[str, list[dict]], labels: list[str]) -> str:
    """sha256 over the canonical rows of each split, in order, then the label list."""
    digest = hashlib.sha256()
    for name in SPLITS:
        digest.update(f"# {name}\n".encode())
        _hash_rows(digest, rows[name])
    digest.update(b"# labels\n" + json.dumps(labels, ensure_ascii=False).encode())
    return digest.hexdigest()


def split_fingerprint(rows: list[dict]) -> str:
    """sha256 over the canonical test rows alone: equal values mean two models saw identical test rows."""
    digest = hashlib.sha256()
    _hash_rows(digest, rows)
    return digest.hexdigest()


def _hash_rows(digest, rows: list[dict]) -> None:
    for row in rows:
        canonical = {key: row[key] for key in row if _stored(key)}
        digest.update(json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


def _stored(key: str) -> bool:
    return key in ROW_FIELDS or key.startswith(META_PREFIX)


def to_dataset(rows: list[dict], labels: list[str], with_pair: bool, regression: bool = False) -> datasets.Dataset:
    """A ``datasets.Dataset`` with ``label`` as a ``ClassLabel`` id, so the names travel with it;
    for regression ``label`` is the float target."""
    features = {"id": datasets.Value("string"), "text": datasets.Value("string")}
    if with_pair:
        features["text_pair"] = datasets.Value("string")
    features["label"] = datasets.Value("float64") if regression else datasets.ClassLabel(names=labels)
    for key in (k for k in (rows[0] if rows else {}) if k.startswith(META_PREFIX)):
        features[key] = datasets.Value("string")
    index = {label: i for i, label in enumerate(labels)}
    records = [{key: (index[row[key]] if key == "label" and not regression else row[key]) for key in features} for row in rows]
    return datasets.Dataset.from_list(records, features=datasets.Features(features))


def dataset_rows(dataset: datasets.Dataset, labels: list[str], regression: bool = False) -> list[dict]:
    """Canonical rows (label names, or float targets) back from a dataset with label ids."""
    if regression:
        return dataset.to_list()
    return [{**row, "label": labels[row["label"]]} for row in dataset.to_list()]


def datasets_root(cfg: TunekitConfig) -> Path:
    return Workspace(cfg.workspace_dir).datasets


def load_frozen(cfg: TunekitConfig, key: str) -> Frozen | None:
    """The frozen splits for ``key``, or None when they were never made (or their folder is gone)."""
    fp = read_index(datasets_root(cfg)).get(key)
    if not fp or not (datasets_root(cfg) / fp[:16] / "meta.json").is_file():
        return None
    return read_directory(datasets_root(cfg) / fp[:16])


def read_directory(directory: Path) -> Frozen:
    """Load a frozen-splits folder and check its rows still hash to the recorded fingerprint."""
    import pyarrow.parquet as pq

    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    labels = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
    dsets = {name: datasets.Dataset(pq.read_table(directory / f"{name}.parquet")) for name in SPLITS}
    regression = task_kinds.kind(meta.get("task", "classification")).numeric
    rows = {name: dataset_rows(dsets[name], labels, regression) for name in SPLITS}
    if fingerprint(rows, labels) != meta["fingerprint"]:
        raise DataError(f"{directory}: the frozen splits no longer match their fingerprint {meta['fingerprint'][:16]} "
                        "(were files in it edited?); delete this folder to make them again from the source files")
    return Frozen(rows, dsets, labels, meta["fingerprint"], meta["test_fingerprint"], directory, meta)


def freeze(cfg: TunekitConfig, key: str, sources: list[SourceFile], rows: dict[str, list[dict]], labels: list[str],
           notes: dict | None = None) -> Frozen:
    """Write the splits once under ``datasets/<fingerprint[:16]>`` and record ``key`` in the index;
    ``notes`` (e.g. how many leaked training rows were removed) go into ``meta.json``."""
    rows = {name: [{f: v for f, v in row.items() if _stored(f)} for row in rows[name]] for name in SPLITS}  # drop "_at"
    fp = fingerprint(rows, labels)
    with_pair = cfg.data.text_pair_column is not None
    dsets = {name: to_dataset(rows[name], labels, with_pair, task_kinds.kind(cfg.task).numeric) for name in SPLITS}
    meta = _meta(cfg, key, fp, split_fingerprint(rows["test"]), sources, rows, labels) | (notes or {})
    directory = write_frozen(cfg, key, {name: dset.data.table for name, dset in dsets.items()}, labels, meta)
    return Frozen(rows, dsets, labels, fp, meta["test_fingerprint"], directory, meta)


def write_frozen(cfg: TunekitConfig, key: str, tables: dict, labels: list[str], meta: dict) -> Path:
    """Freeze one dataset version of any task: ``tables`` (split -> ``pyarrow.Table``) as Parquet under
    ``datasets/<meta["fingerprint"][:16]>`` (atomically, once), logged as created, ``key`` indexed."""
    root = datasets_root(cfg)
    directory = root / meta["fingerprint"][:16]
    if not (directory / "meta.json").is_file():
        write_version(root, directory, tables, labels, meta)
        record_created(root, meta)
    _update_index(root, key, meta["fingerprint"])
    return directory


def record_created(root: Path, meta: dict) -> None:
    """Log a newly frozen version in ``datasets/CHANGELOG.jsonl`` (see ``data.versions``)."""
    from tunekit.data.versions import record  # versions builds on this module

    files = ", ".join(Path(s["path"]).name for s in meta.get("sources", [])) or "no files"
    record(root, "created", meta["fingerprint"], meta["rows"], f"froze splits from {files}", task=meta.get("task", "classification"))


def _meta(cfg: TunekitConfig, key: str, fp: str, test_fp: str, sources: list[SourceFile],
          rows: dict[str, list[dict]], labels: list[str]) -> dict:
    return {
        "store_version": STORE_VERSION,
        "fingerprint": fp,
        "test_fingerprint": test_fp,
        "source_key": key,
        "sources": [{"role": s.role, "path": str(s.path), "sha256": s.sha256, "bytes": s.size} for s in sources],
        "data_config": cfg.data.model_dump(mode="json"),
        "split": {"made": [name for name in ("test", "validation") if getattr(cfg.data, name) is None],
                  **cfg.data.split.model_dump(mode="json"), "max_train_rows": cfg.data.max_train_rows},
        "rows": {name: len(rows[name]) for name in SPLITS},
        "labels": len(labels),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"task": cfg.task} if task_kinds.kind(cfg.task).numeric else {}),
    }


def write_version(root: Path, directory: Path, tables: dict, labels: list[str], meta: dict) -> None:
    """Write a version folder (``<split>.parquet``, ``labels.json``, ``meta.json``) into a temporary
    folder and rename it into place, so a crash never leaves half a frozen split behind."""
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=root))
    try:
        for name, table in tables.items():
            pq.write_table(table, tmp / f"{name}.parquet")
        write_json(tmp / "labels.json", labels)
        write_json(tmp / "meta.json", meta)
        if directory.exists():  # an earlier attempt died before writing meta.json
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- conversations (task: generation) ----------------------------------------------------------------------------

def conversation_table(rows: list[dict], meta_keys: list[str] | None = None):
    """Conversation rows ``{id, messages, origin, [meta]}`` as an Arrow table with a fixed schema:
    ``messages`` a list of ``{role, content, weight}``, ``meta`` (only with ``meta_keys``) a struct of strings."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("weight", pa.int64())])
    fields = [("id", pa.string()), ("messages", pa.list_(message)), ("origin", pa.string())]
    if meta_keys:
        fields.append(("meta", pa.struct([(k, pa.string()) for k in meta_keys])))
    schema = pa.schema(fields)
    records = [{"id": r["id"], "messages": [{"role": m["role"], "content": m["content"], "weight": int(m["weight"])}
                                            for m in r["messages"]],
                "origin": r["origin"], **({"meta": r.get("meta")} if meta_keys else {})} for r in rows]
    return pa.Table.from_pylist(records, schema=schema)


def conversation_canonical(row: dict) -> dict:
    """What a conversation's fingerprint covers: id and messages, and the metadata when the row has some."""
    return {"id": row["id"], "messages": row["messages"], **({"meta.": row["meta"]} if row.get("meta") else {})}


def conversation_meta_keys(rows: dict[str, list[dict]]) -> list[str]:
    """The metadata keys of conversation rows in every split, in first-seen order (empty without metadata)."""
    keys: dict[str, None] = {}
    for split in rows.values():
        for row in split:
            keys.update(dict.fromkeys(row.get("meta") or {}))
    return list(keys)


def conversation_rows(table) -> list[dict]:
    """Rows back from ``conversation_table``: exactly the dicts that went in (a row without metadata has no ``meta``)."""
    out = []
    for row in table.to_pylist():
        if row.get("meta") is None:
            row.pop("meta", None)
        out.append(row)
    return out


def read_conversations(directory: Path) -> dict[str, list[dict]]:
    """The conversation rows of a generation version folder: Parquet, or the JSONL of folders frozen before."""
    import pyarrow.parquet as pq

    if (directory / "train.parquet").is_file():
        return {name: conversation_rows(pq.read_table(directory / f"{name}.parquet")) for name in SPLITS}
    if (directory / "train.jsonl").is_file():
        return {name: [json.loads(line) for line in (directory / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line]
                for name in SPLITS}
    raise DataError(f"{directory}: no train.parquet in this frozen-splits folder; delete the folder to make the splits "
                    "again from the source files")


def read_index(root: Path) -> dict[str, str]:
    """The source-key index; it is only a cache of fingerprints, so an unreadable one counts as empty."""
    try:
        index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(index, dict):
        return {}
    return {key: fp for key, fp in index.items() if isinstance(fp, str)}


def _update_index(root: Path, key: str, fp: str) -> None:
    index = read_index(root)
    if index.get(key) != fp:
        index[key] = fp
        write_json(root / "index.json", index)


def write_json(path: Path, value) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
