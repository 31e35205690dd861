"""Dataset versions in the workspace: the changelog, and erasure of rows from every stored version.

Frozen splits are content-addressed (``datasets/<fingerprint[:16]>/``, see ``store``). Next to them,
``datasets/CHANGELOG.jsonl`` is an append-only log, one JSON object per line::

    {"at": "2025-01-31T12:00:00+00:00", "action": "created", "fingerprint": "...",
     "rows": {"train": 900, "validation": 100, "test": 200}, "reason": "froze splits from train.csv", "by": "ana"}

``created`` is written when splits are frozen (``store.record_created``); ``forgotten`` by ``forget``,
which removes matching rows from every stored version (Parquet, and the JSONL of generation folders
frozen before generation moved to Parquet), writes each version again as Parquet under its new
fingerprint, leaves ``<old>/alias.json`` (no rows) pointing
to the new folder, moves ``index.json`` entries along, and lists the registered model versions
trained on data that held the rows, so they can be retrained. The changelog records how many rows
went from which split and why, never the erased values nor the ``--where`` value (that could be
the very personal data being erased). Derived files in a folder (data reports, caches) are
dropped; the next ``prepare`` writes them again from the rows that are left.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tunekit import task_kinds
from tunekit.artifacts import Workspace
from tunekit.data import store
from tunekit.errors import DataError

__all__ = ["AffectedModel", "ErasedVersion", "ForgetResult", "Selector", "changelog", "current", "forget", "parse_where",
           "read_ids", "record"]

CHANGELOG = "CHANGELOG.jsonl"
ALIAS = "alias.json"
FIELDS = ("text", "id", "label")
_WHERE = re.compile(r"^\s*(?P<field>[A-Za-z_]+)\s*(?P<op>~=|==)\s*(?P<value>.*?)\s*$", re.DOTALL)


def record(root: Path, action: str, fingerprint: str, rows: dict[str, int], reason: str, **extra) -> dict:
    """Append one entry to ``root/CHANGELOG.jsonl`` (``root`` is the workspace's ``datasets`` folder)."""
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "action": action, "fingerprint": fingerprint,
             "rows": rows, "reason": reason, "by": _user(), **extra}
    root.mkdir(parents=True, exist_ok=True)
    with (root / CHANGELOG).open("a", encoding="utf-8") as fh:  # one short appended line: readers never see half of it
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return entry


def changelog(workspace: Path) -> list[dict]:
    """Every changelog entry of the workspace, oldest first (empty when nothing was frozen yet)."""
    path = Workspace(workspace).datasets / CHANGELOG
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise DataError(f"{path} line {number}: not a JSON object; the changelog is append-only, "
                            "restore that line from a backup or delete it") from None
    return entries


def current(workspace: Path, fingerprint: str) -> tuple[str, list[dict]]:
    """Follow alias files from ``fingerprint`` to the version that holds its rows now: (fingerprint, alias records passed)."""
    root, chain = Workspace(workspace).datasets, []
    while (root / fingerprint[:16] / ALIAS).is_file() and len(chain) < 100:
        alias = json.loads((root / fingerprint[:16] / ALIAS).read_text(encoding="utf-8"))
        chain.append(alias)
        fingerprint = alias["alias_of"]
    return fingerprint, chain


# --- what to forget ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """Which rows to forget: ``FIELD~=REGEX`` / ``FIELD==VALUE`` on ``text``, ``id`` or ``label``, or a set of row ids.

    ``text`` covers ``text`` and ``text_pair`` of classification rows and the content of every
    message of a conversation; ``label`` never matches a conversation (it has none).
    """

    field: str = "id"
    op: str = "=="
    value: str = ""
    ids: frozenset[str] | None = None

    def matches(self, row: dict) -> bool:
        if self.ids is not None:
            return row["id"] in self.ids
        values = _values(row, self.field)
        if self.op == "~=":
            pattern = re.compile(self.value)
            return any(isinstance(v, str) and pattern.search(v) for v in values)
        return any(_equal(v, self.value) for v in values)

    def describe(self) -> str:
        """What was matched, without the value (which may be the personal data being erased)."""
        return f"{len(self.ids)} row ids" if self.ids is not None else f"{self.field}{self.op}<value>"


def parse_where(expression: str) -> Selector:
    """``text~=refund``, ``text=="my card"``, ``id==train-12``, ``label==refund`` to a ``Selector``.

    One field, one operator (``~=`` regex search, ``==`` equality), one value, optionally quoted;
    nothing is evaluated. A bad expression or regex is a ``DataError`` showing the accepted form.
    """
    match = _WHERE.match(expression)
    form = "FIELD~=REGEX or FIELD==VALUE with FIELD one of text, id, label (e.g. --where 'text~=(?i)refund')"
    if not match:
        raise DataError(f"--where {expression!r}: expected {form}")
    name, op, value = match["field"], match["op"], match["value"]
    if name not in FIELDS:
        raise DataError(f"--where {expression!r}: unknown field {name!r}; expected {form}")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    if not value:
        raise DataError(f"--where {expression!r}: the value is empty; expected {form}")
    if op == "~=":
        try:
            re.compile(value)
        except re.error as exc:
            raise DataError(f"--where {expression!r}: not a valid regular expression ({exc})") from None
    return Selector(name, op, value)


def read_ids(path: Path) -> list[str]:
    """Row ids from a file, one per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--ids {path}: file not found (one row id per line, as in the `id` column of the frozen splits)")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [i for i in ids if i and not i.startswith("#")]
    if not ids:
        raise DataError(f"--ids {path}: the file holds no row ids (one per line)")
    return ids


def _values(row: dict, name: str) -> list:
    if name == "text":
        if "messages" in row:
            return [m.get("content") for m in row["messages"]]
        return [row.get("text"), row.get("text_pair")]
    if name == "label":
        return [] if "messages" in row else [row.get("label")]
    return [row.get(name)]


def _equal(value, wanted: str) -> bool:
    if isinstance(value, float):  # a regression target: label==3.5 matches 3.5 whatever its spelling
        try:
            return value == float(wanted)
        except ValueError:
            return False
    return value == wanted


# --- forgetting -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasedVersion:
    """One stored dataset version that held matching rows, before and after."""

    fingerprint: str              # before the erasure (now an alias)
    new_fingerprint: str          # the folder that holds the remaining rows
    removed: dict[str, int]       # split -> rows removed
    remaining: dict[str, int]     # split -> rows left
    directory: Path
    sources: list[str]            # the input files it was frozen from: they still hold the rows


@dataclass(frozen=True)
class AffectedModel:
    """A registered model version trained on data that held erased rows."""

    name: str
    version: str
    aliases: list[str]
    data_fingerprint: str
    run_dir: str | None


@dataclass
class ForgetResult:
    match: str
    reason: str
    datasets: list[ErasedVersion] = field(default_factory=list)
    models: list[AffectedModel] = field(default_factory=list)
    registry: str | None = None   # the tracking URI searched for model versions; None when there was none

    @property
    def rows(self) -> int:
        """Rows removed, counted once per stored version and split."""
        return sum(sum(d.removed.values()) for d in self.datasets)

    @property
    def changed(self) -> bool:
        return bool(self.datasets)


def forget(workspace: Path, where: str | None, ids: list[str] | None, reason: str, tracking_uri: str | None = None) -> ForgetResult:
    """Remove the rows matching ``where`` (or with one of ``ids``) from every dataset version in the workspace.

    Every version that held such rows is written again without them under its new fingerprint, its
    old folder keeps only ``alias.json``, ``index.json`` follows, each erasure is a ``forgotten``
    changelog entry, and the result lists the model versions (``tracking_uri``, default: the
    workspace's ``mlflow.db`` when it exists) whose ``data_fingerprint`` is an erased version or an
    earlier alias of one. When nothing matches, no file is touched.
    """
    if (where is None) == (ids is None):
        raise DataError("give either --where EXPR or --ids FILE (one of them) to say which rows to forget")
    if not reason.strip():
        raise DataError("--reason: say why the rows are erased (a request id, a ticket); it goes into the changelog")
    selector = parse_where(where) if where is not None else Selector(ids=frozenset(ids or []))
    if selector.ids is not None and not selector.ids:
        raise DataError("--ids: no row ids given")
    root = Workspace(workspace).datasets
    result = ForgetResult(match=selector.describe(), reason=reason)
    for folder in _version_folders(root):  # listed before any rewrite: new folders hold no matching rows
        rows, keep = _match(folder, selector)
        if not all(all(k) for k in keep.values()):
            result.datasets.append(_rewrite(root, folder, rows, keep, reason, selector))
    if result.changed:
        moved = {d.fingerprint: d.new_fingerprint for d in result.datasets}
        _move_index(root, moved)
        earlier = _redirect_aliases(root, moved)
        result.registry, result.models = _affected_models(Path(workspace), tracking_uri, set(moved) | earlier)
    return result


def _version_folders(root: Path) -> list[Path]:
    """Folders holding a complete frozen version (``meta.json`` is written last), in name order."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file())


def _generation(folder: Path) -> bool:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return task_kinds.kind(meta.get("task", "classification")).causal


def _match(folder: Path, selector: Selector) -> tuple[dict, dict[str, list[bool]]]:
    """The folder's rows per split (generation: JSON rows; classification: an Arrow table and canonical rows) and a keep-mask."""
    if _generation(folder):
        rows = store.read_conversations(folder)
        return rows, {name: [not selector.matches(r) for r in rows[name]] for name in store.SPLITS}
    import datasets
    import pyarrow.parquet as pq

    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    tables = {name: pq.read_table(folder / f"{name}.parquet") for name in store.SPLITS}
    canonical = {name: store.dataset_rows(datasets.Dataset(tables[name]), labels, task_kinds.kind(meta.get("task", "classification")).numeric)
                 for name in store.SPLITS}
    return {"tables": tables, "rows": canonical, "labels": labels}, \
        {name: [not selector.matches(r) for r in canonical[name]] for name in store.SPLITS}


def _rewrite(root: Path, folder: Path, rows: dict, keep: dict[str, list[bool]], reason: str, selector: Selector) -> ErasedVersion:
    """Write the kept rows as a new version, leave an alias where the old one was, log the erasure."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    old = meta["fingerprint"]
    removed = {name: keep[name].count(False) for name in store.SPLITS}
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-forget-", dir=root))
    try:
        if _generation(folder):
            kept = {name: [r for r, k in zip(rows[name], keep[name]) if k] for name in store.SPLITS}
            canonical = {name: [store.conversation_canonical(r) for r in kept[name]] for name in store.SPLITS}
            new = store.fingerprint(canonical, [])
            meta_keys = store.conversation_meta_keys(rows)
            for name in store.SPLITS:  # an old JSONL folder is written again as Parquet, like every frozen version
                _write_parquet(store.conversation_table(kept[name], meta_keys), tmp / f"{name}.parquet")
            store.write_json(tmp / "labels.json", [])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            canonical = {name: [r for r, k in zip(rows["rows"][name], keep[name]) if k] for name in store.SPLITS}
            new = store.fingerprint(canonical, rows["labels"])
            for name in store.SPLITS:  # filtering the Arrow table keeps its schema (ClassLabel names) as it was
                pq.write_table(rows["tables"][name].filter(pa.array(keep[name], type=pa.bool_())), tmp / f"{name}.parquet")
            store.write_json(tmp / "labels.json", rows["labels"])
        remaining = {name: len(canonical[name]) for name in store.SPLITS}
        erasure = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "from": old, "rows": removed, "reason": reason}
        store.write_json(tmp / "meta.json", {**meta, "fingerprint": new, "test_fingerprint": store.split_fingerprint(canonical["test"]),
                                             "rows": remaining, "forgotten": [*meta.get("forgotten", []), erasure]})
        target = root / new[:16]
        if not (target / "meta.json").is_file():  # else the same rows are stored already (two versions became one)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(folder)
    folder.mkdir()
    store.write_json(folder / ALIAS, {"fingerprint": old, "alias_of": new, "at": erasure["at"], "reason": reason,
                                      "note": "rows were erased by `tunekit data forget`; this folder holds none"})
    record(root, "forgotten", old, removed, reason, replaced_by=new, match=selector.describe(), remaining=remaining)
    return ErasedVersion(old, new, removed, remaining, target, [s["path"] for s in meta.get("sources", [])])


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def _move_index(root: Path, moved: dict[str, str]) -> None:
    index = store.read_index(root)
    updated = {key: moved.get(fp, fp) for key, fp in index.items()}
    if updated != index:
        store.write_json(root / "index.json", updated)


def _redirect_aliases(root: Path, moved: dict[str, str]) -> set[str]:
    """Point older aliases of an erased version at its new folder; their fingerprints held the rows too."""
    earlier = set()
    for path in root.glob(f"*/{ALIAS}"):
        alias = json.loads(path.read_text(encoding="utf-8"))
        if alias["alias_of"] in moved:
            earlier.add(alias["fingerprint"])
            store.write_json(path, {**alias, "alias_of": moved[alias["alias_of"]]})
    return earlier


def _affected_models(workspace: Path, tracking_uri: str | None, fingerprints: set[str]) -> tuple[str | None, list[AffectedModel]]:
    """Every registered model version whose ``data_fingerprint`` tag is one of ``fingerprints``."""
    local = Workspace(Path(workspace).resolve())
    uri = tracking_uri or (local.tracking_uri if local.mlflow_db.is_file() else None)
    if uri is None:
        return None, []
    from tunekit import registry

    mlc = registry.client(uri, workspace)
    found = []
    for model in _pages(mlc.search_registered_models):
        for mv in _pages(mlc.search_model_versions, filter_string=f"name = '{model.name}'"):
            fp = (mv.tags or {}).get("data_fingerprint")
            if fp in fingerprints:
                full = mlc.get_model_version(model.name, str(mv.version))  # search results carry no aliases in MLflow 3
                found.append(AffectedModel(model.name, str(mv.version), list(full.aliases or []), fp, (mv.tags or {}).get("run_dir")))
    return uri, sorted(found, key=lambda m: (m.name, int(m.version)))


def _pages(search, **kwargs) -> list:
    out, token = [], None
    while True:
        page = search(**kwargs, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _user() -> str:
    try:
        return os.environ.get("TUNEKIT_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        return "unknown"
