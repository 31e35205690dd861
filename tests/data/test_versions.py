"""Dataset versions: the changelog, and erasure of rows from every stored version (bytes on disk included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit import registry
from tunekit.data import prepare, store, versions
from tunekit.errors import DataError

LABELS = ("card", "refund", "transfer")


def _rows(n: int) -> list[str]:
    """``n`` plain rows per label and one row per label that mentions a refund (the ones to forget)."""
    lines = [f"text {label} number {i},{label}" for label in LABELS for i in range(n)]
    return lines + [f"please give a refund to {label} holder,{label}" for label in LABELS]


@pytest.fixture
def two_versions(project):
    """Two dataset versions sharing rows (v2 = v1 plus more), and model ``t`` v1 (champion) trained on the first."""
    project.write("v1.csv", "\n".join(["text,label", *_rows(10)]) + "\n")
    project.write("v2.csv", "\n".join(["text,label", *_rows(10), *(f"more {label} row {i},{label}" for label in LABELS for i in range(3))]) + "\n")
    first, second = prepare(project.config(train="v1.csv")), prepare(project.config(train="v2.csv"))
    ws = project.root / "ws"
    mlc = registry.client(f"sqlite:///{ws / 'mlflow.db'}", ws)
    adapter = project.write("adapter/tunekit.json", "{}").parent
    run_id = registry.log_run(mlc, "t", ws, params={}, metrics={}, tags={}, artifacts=[("adapter", adapter)])
    version = registry.register(mlc, "t", run_id, {"data_fingerprint": first.fingerprint, "run_dir": str(ws / "runs" / "r1")})
    registry.promote(mlc, "t", version, "first")
    return first, second, ws


def _files(ws: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted((ws / "datasets").rglob("*")) if p.is_file()}


def test_forget_where_erases_rows_from_every_version_and_names_the_models(two_versions, project):
    first, second, ws = two_versions
    assert any(b"refund to" in blob for blob in _files(ws).values())  # the bytes check below can see the rows

    result = versions.forget(ws, "text~=give a refund", None, reason="erasure request 42")

    assert result.rows == 6 and result.match == "text~=<value>"
    assert {d.fingerprint for d in result.datasets} == {first.fingerprint, second.fingerprint}
    assert all(sum(d.removed.values()) == 3 for d in result.datasets)
    leftover = [name for name, blob in _files(ws).items() if b"refund to" in blob or b"give a" in blob]
    assert leftover == []
    for erased in result.datasets:
        frozen = store.read_directory(erased.directory)  # the new folder verifies against its new fingerprint
        assert frozen.fingerprint == erased.new_fingerprint != erased.fingerprint
        assert sum(len(frozen.rows[s]) for s in store.SPLITS) == sum(erased.remaining.values())
        assert frozen.test_fingerprint == store.split_fingerprint(frozen.rows["test"])
        old = ws / "datasets" / erased.fingerprint[:16]
        assert [p.name for p in old.iterdir()] == ["alias.json"]
        assert json.loads((old / "alias.json").read_text())["alias_of"] == erased.new_fingerprint
    index = json.loads((ws / "datasets" / "index.json").read_text())
    assert sorted(index.values()) == sorted(d.new_fingerprint for d in result.datasets)

    log = versions.changelog(ws)
    assert [e["action"] for e in log] == ["created", "created", "forgotten", "forgotten"]
    assert log[0]["fingerprint"] == first.fingerprint and log[0]["reason"] == "froze splits from v1.csv"
    gone = {e["fingerprint"]: e for e in log[2:]}
    assert sum(gone[first.fingerprint]["rows"].values()) == 3 and gone[first.fingerprint]["reason"] == "erasure request 42"
    assert set(gone[first.fingerprint]["rows"]) == {"train", "validation", "test"}
    assert result.registry and [(m.name, m.version, m.aliases, m.data_fingerprint, m.run_dir) for m in result.models] == \
        [("t", "1", ["champion"], first.fingerprint, str(ws / "runs" / "r1"))]

    again = prepare(project.config(train="v1.csv"))  # the unchanged source file reuses the erased version
    assert again.reused and again.fingerprint == gone[first.fingerprint]["replaced_by"]
    assert not any("refund to" in r["text"] for r in again.train)


def test_forget_ids_and_a_second_erasure_follow_the_aliases(two_versions, tmp_path):
    first, _, ws = two_versions
    versions.forget(ws, "text~=refund", None, reason="request 1")
    target = json.loads((ws / "datasets" / first.fingerprint[:16] / "alias.json").read_text())["alias_of"]
    ids = [r["id"] for r in store.read_directory(ws / "datasets" / target[:16]).rows["train"][:2]]
    (tmp_path / "ids.txt").write_text("# rows to erase\n" + "\n".join(ids) + "\n\n")

    result = versions.forget(ws, None, versions.read_ids(tmp_path / "ids.txt"), reason="request 2")

    assert [d.fingerprint for d in result.datasets] == [target] and result.rows == 2  # v2's rows have other ids
    final = store.read_directory(result.datasets[0].directory)
    assert not set(ids) & {r["id"] for s in store.SPLITS for r in final.rows[s]}
    now, chain = versions.current(ws, first.fingerprint)  # the first alias now points past the intermediate version
    assert now == final.fingerprint and len(chain) == 1
    assert [(m.name, m.version) for m in result.models] == [("t", "1")]  # trained on data that held these rows too
    assert versions.changelog(ws)[-1]["match"] == "2 row ids"


def test_forgetting_nothing_changes_nothing(two_versions):
    _, _, ws = two_versions
    before = _files(ws)
    result = versions.forget(ws, "text==no such row", None, reason="check")
    assert not result.changed and result.rows == 0 and result.models == [] and result.datasets == []
    assert _files(ws) == before


@pytest.mark.parametrize("expression, message", [
    ("colour==red", "unknown field 'colour'"),
    ("text~=(unclosed", "not a valid regular expression"),
    ("text==", "the value is empty"),
    ("text refund", "expected FIELD~=REGEX or FIELD==VALUE"),
])
def test_where_expressions_are_parsed_not_evaluated(expression, message):
    with pytest.raises(DataError, match=message):
        versions.parse_where(expression)


def test_where_values_and_argument_errors(tmp_path):
    assert versions.parse_where("text == 'my card'").matches({"id": "x", "text": "my card", "label": "a"})
    assert versions.parse_where("label==refund").matches({"id": "x", "text": "t", "label": "refund"})
    assert versions.parse_where("text~=(?i)REFUND").matches({"id": "x", "messages": [{"role": "user", "content": "a refund"}]})
    assert not versions.parse_where("label==a").matches({"id": "x", "messages": [{"role": "user", "content": "a"}]})
    assert versions.parse_where("label==2.5").matches({"id": "x", "text": "t", "label": 2.5})
    with pytest.raises(DataError, match="either --where EXPR or --ids FILE"):
        versions.forget(tmp_path, "text~=a", ["x"], reason="r")
    with pytest.raises(DataError, match="--reason"):
        versions.forget(tmp_path, "text~=a", None, reason=" ")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="holds no row ids"):
        versions.read_ids(tmp_path / "empty.txt")


def test_generation_versions_are_logged_and_erased(project):
    from tunekit.config import load_config
    from tunekit.data import conversations

    chats = [{"messages": [{"role": "user", "content": f"question {i}" + (" about a refund" if i % 5 == 0 else "")},
                           {"role": "assistant", "content": f"answer {i}"}]} for i in range(30)]
    project.write_jsonl("chat.jsonl", chats)
    (project.root / "gen.yaml").write_text(f"name: g\ntask: generation\nworkspace: {project.root / 'ws'}\ndata: {{train: chat.jsonl}}\n")
    cfg = load_config(project.root / "gen.yaml")
    sources = store.source_files(cfg)
    rows, duplicates = conversations._read_and_split(cfg, {s.role: s.path for s in sources})
    directory = conversations._freeze(cfg, store.source_key(cfg, sources), sources, rows, duplicates)
    ws = project.root / "ws"
    assert versions.changelog(ws)[0]["action"] == "created" and versions.changelog(ws)[0]["task"] == "generation"

    result = versions.forget(ws, "text~=refund", None, reason="request 7")

    assert result.rows == 6 and result.registry is None  # no mlflow.db in this workspace: no registry to search
    kept, meta = conversations.read_frozen(result.datasets[0].directory)
    assert meta["fingerprint"] == result.datasets[0].new_fingerprint and sum(len(v) for v in kept.values()) == 24
    assert not any(b"refund" in blob for blob in _files(ws).values())
    assert not (directory / "train.jsonl").exists()
