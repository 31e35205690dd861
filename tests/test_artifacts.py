"""The typed manifest (``tunekit.json``), the workspace's paths, and derived configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunekit.artifacts import DEFAULT_WORKSPACE, MANIFEST, Manifest, Workspace
from tunekit.config import TunekitConfig, load_config
from tunekit.errors import ConfigError, ModelError


def manifest(**fields) -> Manifest:
    return Manifest(**{"task": "classification", "name": "intent", "method": "lora", "base_model": {"id": "bundled:minilm"},
                       "max_length": 64, "labels": ["card", "refund"], **fields})


def test_manifest_constant_is_the_one_models_exports():
    from tunekit import models

    assert models.MANIFEST is MANIFEST == "tunekit.json"


def test_round_trip_keeps_every_field_and_writes_only_the_set_ones(tmp_path):
    written = manifest(target={"mean": 2.5, "std": 0.5}, metrics={"accuracy": 0.75}, history=[{"epoch": 1, "train_loss": 0.3}])
    path = written.write(tmp_path)
    assert path == tmp_path / MANIFEST
    read = Manifest.read(tmp_path)
    assert read == written
    assert read.target.mean == 2.5 and read.base_model.id == "bundled:minilm"
    raw = json.loads(path.read_text())
    assert "temperature" not in raw and "merged_from" not in raw  # defaults are not recorded as if measured
    assert raw["format_version"] == 1  # ... except the layout's version, which every file carries
    assert read.temperature == 1.0 and read.text_pair is False
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]  # no temporary file left behind


def test_a_folder_written_by_train_loads(tmp_path):
    """The exact shape ``train._save`` writes today (every key), so old folders keep loading."""
    raw = {"format_version": 1, "task": "regression", "name": "price", "method": "lora",
           "base_model": {"id": "bundled:minilm", "resolved": "/x/minilm", "revision": None}, "labels": [],
           "target": {"mean": 10.0, "std": 2.0}, "max_length": 32, "text_pair": True, "data_fingerprint": "ab" * 32,
           "test_fingerprint": "cd" * 32, "config": {"name": "price"}, "config_hash": "ef" * 32,
           "history": [{"epoch": 1, "val_rmse": 1.2}], "best_epoch": 1, "git_commit": None, "versions": {"torch": "2.5"},
           "created_at": "2026-12-01T10:00:00+00:00", "metrics": {}}
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    read = Manifest.read(tmp_path)
    assert read.model_dump(mode="json", exclude_unset=True) == raw
    assert read.target.std == 2.0 and read.text_pair is True


def test_missing_file_names_it_and_lists_the_folder(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"tunekit\.json is missing \(found: adapter_model\.safetensors\)"):
        Manifest.read(tmp_path)


def test_missing_field_names_file_field_and_folder_contents(tmp_path):
    raw = manifest().model_dump(mode="json")
    del raw["max_length"]
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError) as err:
        Manifest.read(tmp_path)
    message = str(err.value)
    assert str(tmp_path / MANIFEST) in message
    assert "field `max_length`: required, but missing" in message
    assert f"The folder holds: tokenizer.json, {MANIFEST}." in message


def test_invalid_field_value_names_the_nested_field(tmp_path):
    raw = manifest().model_dump(mode="json")
    raw["base_model"] = {"id": 7}
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"field `base_model\.id`: .*got 7"):
        Manifest.read(tmp_path)


def test_unknown_task_is_refused_with_the_tasks_there_are(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest().model_dump(mode="json"), "task": "ranking"}))
    with pytest.raises(ModelError, match=r"field `task`: .*'ranking' is not a task.*classification"):
        Manifest.read(tmp_path)


def test_extra_field_is_refused(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest().model_dump(mode="json"), "temprature": 1.5}))
    with pytest.raises(ModelError, match=r"field `temprature`: unknown field; the fields are .*temperature"):
        Manifest.read(tmp_path)
    with pytest.raises(ValueError, match="temprature"):
        manifest(temprature=1.5)


def test_unreadable_json_names_the_file_and_the_parser_error(tmp_path):
    (tmp_path / MANIFEST).write_text('{"task": "classification", ')
    with pytest.raises(ModelError) as err:
        Manifest.read(tmp_path)
    assert str(tmp_path / MANIFEST) in str(err.value) and "JSONDecodeError" in str(err.value)


def test_update_sets_validates_and_writes(tmp_path):
    manifest().write(tmp_path)
    updated = Manifest.update(tmp_path, metrics={"accuracy": 0.9}, temperature=1.7)
    assert updated.metrics == {"accuracy": 0.9} and updated.temperature == 1.7
    again = Manifest.read(tmp_path)
    assert again.metrics == {"accuracy": 0.9} and again.temperature == 1.7 and again.labels == ["card", "refund"]
    with pytest.raises(ModelError, match=r"\(setting temperature\): field `temperature`"):
        Manifest.update(tmp_path, temperature="hot")
    assert Manifest.read(tmp_path).temperature == 1.7  # a refused update leaves the file as it was
    with pytest.raises(ModelError, match="field `colour`: unknown field"):
        Manifest.update(tmp_path, colour="red")


def test_workspace_names_every_path(tmp_path):
    ws = Workspace(tmp_path)
    assert (ws.mlflow_db, ws.serving_db, ws.keys_db, ws.optuna_db) == (
        tmp_path / "mlflow.db", tmp_path / "serving.db", tmp_path / "keys.db", tmp_path / "optuna.db")
    assert (ws.runs, ws.datasets, ws.artifacts) == (tmp_path / "runs", tmp_path / "datasets", tmp_path / "artifacts")
    assert ws.run("r1") == tmp_path / "runs" / "r1"
    assert ws.dataset("0123456789abcdef0123") == tmp_path / "datasets" / "0123456789abcdef"
    assert (ws.tune, ws.compare, ws.retrain, ws.reproduce, ws.monitor) == tuple(
        tmp_path / name for name in ("tune", "compare", "retrain", "reproduce", "monitor"))
    assert ws.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert Workspace(str(tmp_path)).root == tmp_path  # a string is taken as a path
    assert Workspace.default().root == Path(DEFAULT_WORKSPACE) == Path("tunekit-workspace")


def test_config_tracking_uses_the_workspace(tmp_path):
    cfg = TunekitConfig.from_dump({"name": "t", "workspace": str(tmp_path / "ws"), "data": {"train": "train.csv"}})
    assert cfg.tracking == Workspace(tmp_path / "ws").tracking_uri


@pytest.fixture
def config_in_subfolder(tmp_path, monkeypatch):
    """A config in ``tmp_path/project`` naming relative paths, loaded from ``tmp_path/elsewhere``."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "train.csv").write_text("text,label\na,b\n")
    (project / "config.yaml").write_text(yaml.safe_dump({"name": "t", "data": {"train": "train.csv"},
                                                         "method": {"kind": "lora", "r": 8}}))
    monkeypatch.chdir(elsewhere)
    return load_config(project / "config.yaml"), project, elsewhere


def test_derive_sets_dotted_keys_and_keeps_relative_paths(config_in_subfolder):
    cfg, project, elsewhere = config_in_subfolder
    new = cfg.derive(**{"train.learning_rate": 1e-4, "method.r": 4, "data.train": "more.csv"})
    assert new.train.learning_rate == 1e-4 and new.method.r == 4 and cfg.method.r == 8  # the original is untouched
    assert new.path(new.data.train) == project / "more.csv"  # relative to the original config's folder, not the cwd
    assert new.path(cfg.data.train) == project / "train.csv"
    assert new.workspace_dir == cfg.workspace_dir == elsewhere / "tunekit-workspace"  # an unnamed workspace stays in the cwd
    assert new.source_dir == project and new.working_dir == elsewhere


def test_derive_without_changes_is_an_equal_config(config_in_subfolder):
    cfg, _, _ = config_in_subfolder
    same = cfg.derive()
    assert same.hash() == cfg.hash() and same.workspace_dir == cfg.workspace_dir


def test_derive_validates_and_lists_every_problem(config_in_subfolder):
    cfg, _, _ = config_in_subfolder
    with pytest.raises(ConfigError) as err:
        cfg.derive(**{"train.learning_rate": "fast", "train.epoks": 3})
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "train.learning_rate: Input should be a valid number" in message and "got 'fast'" in message
    assert "train.epoks: unknown key; valid keys here: epochs" in message


def test_from_dump_rebuilds_the_config_a_child_process_is_given(config_in_subfolder):
    cfg, project, elsewhere = config_in_subfolder
    child = TunekitConfig.from_dump(cfg.dump(), str(cfg.source_dir), str(cfg.working_dir))
    assert child.hash() == cfg.hash()
    assert child.path(child.data.train) == project / "train.csv"
    assert child.workspace_dir == cfg.workspace_dir
