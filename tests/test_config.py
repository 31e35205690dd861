import json
from pathlib import Path
import re

import pytest

from tunekit.config import TunekitConfig, config_reference_markdown, load_config
from tunekit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_all_problems_reported_at_once_with_yaml_path_and_line(tmp_path):
    path = write(tmp_path, "name: x\ndata:\n  train: a.csv\n  txt_column: t\nmethod: {kind: full, r: 3}\ntrain: {learning_rate: -1}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert "3 problem(s)" in msg
    assert "line 4: data.txt_column: unknown key; valid keys here: train," in msg
    assert "line 5: method.r: unknown key; valid keys here: kind" in msg  # the full method's keys, not LoRA's
    assert "line 6: train.learning_rate: Input should be greater than 0, got -1" in msg


def test_missing_required_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"data: required, but missing"):
        load_config(write(tmp_path, "name: x\n"))
    with pytest.raises(ConfigError, match=r"line \d+: not valid YAML"):
        load_config(write(tmp_path, "name: x\ndata: [\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_headerless_needs_columns(tmp_path):
    with pytest.raises(ConfigError, match="data.columns"):
        load_config(write(tmp_path, "name: x\ndata: {train: a.csv, header: false}\n"))


def test_defaults_paths_and_method_learning_rate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "proj"
    sub.mkdir()
    cfg = load_config(write(sub, "name: x\ndata: {train: a.csv}\nmethod: {kind: full}\n"))
    assert cfg.path(cfg.data.train) == sub / "a.csv"  # data paths: relative to the config file
    assert cfg.workspace_dir == tmp_path / "tunekit-workspace"  # workspace: relative to where tunekit runs
    assert cfg.learning_rate == 1e-4
    assert cfg.tracking == f"sqlite:///{tmp_path / 'tunekit-workspace' / 'mlflow.db'}"
    other = load_config(write(sub, "name: x\ndata: {train: a.csv}\ntrain: {epochs: 5}\n"))
    assert other.learning_rate == 2e-3 and other.hash() != cfg.hash()


def test_every_path_written_in_the_config_is_relative_to_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "proj"
    (sub / "models" / "tiny").mkdir(parents=True)
    cfg = load_config(write(sub, "name: x\nworkspace: ws\ndata: {train: a.csv}\nmodel: {base: models/tiny}\n"))
    assert cfg.workspace_dir == sub / "ws"
    assert cfg.model.base == str(sub / "models" / "tiny")  # absolute: the adapter records where its base is
    assert cfg.paths_note() == f"Paths in the config are relative to its folder {sub}; workspace {sub / 'ws'} (named in the config)"
    default = load_config(write(sub, "name: x\ndata: {train: a.csv}\nmodel: {base: org/hub-model}\n"))
    assert default.model.base == "org/hub-model"  # a hub id stays one
    assert default.paths_note().endswith(f"workspace {tmp_path / 'tunekit-workspace'} (the default, in the directory tunekit runs in)")
    (tmp_path / "cwd-model").mkdir()
    with pytest.raises(ConfigError, match=r"model.base 'cwd-model' is a folder relative to the current directory, .* write `base: ../cwd-model`"):
        load_config(write(sub, "name: x\ndata: {train: a.csv}\nmodel: {base: cwd-model}\n"))


def test_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\ndata: {train: a.csv}\n"), {"train.epochs": 7, "method.kind": "full"})
    assert cfg.train.epochs == 7 and cfg.method.kind == "full"


def test_shipped_examples_are_valid():
    import json

    from tunekit.evaluate.suite import load_suite

    configs = list((ROOT / "examples").rglob("config*.yaml"))
    assert len(configs) >= 2
    for path in configs:
        cfg = load_config(path)
        if cfg.eval.suite:
            labels = json.loads((path.parent / "data" / "categories.json").read_text())
            assert load_suite(cfg.path(cfg.eval.suite), labels)


def test_every_field_is_described():
    schema = json.dumps(TunekitConfig.model_json_schema())
    assert '"description": ""' not in schema
    for title, rows in re.findall(r"#### `([^`]+)`\n\n[^\n]*\n\n\| key[^\n]*\n\|[^\n]*\n((?:\|[^\n]*\n)+)", config_reference_markdown()):
        for row in rows.strip().splitlines():
            assert row.rstrip().endswith("|") and row.split("|")[3].strip(), f"{title}: undocumented field in {row}"


def test_readme_config_reference_is_in_sync():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    assert start in readme and end in readme
    block = readme.split(start)[1].split(end)[0].strip()
    assert block == config_reference_markdown().strip(), "README config reference is stale: run `tunekit config reference` and paste it"


def test_readme_shows_the_shipped_quickstart_config():
    assert (ROOT / "examples/banking77/config.yaml").read_text() in (ROOT / "README.md").read_text()


def test_data_section_for_files_tunekit_wrote_resets_reading_options(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\ndata: {train: {path: a.csv, header: false, columns: [l, t]}, delimiter: ';', "
                                      "encoding: latin-1, label_map: {1: World}, text_column: t, label_column: l, quoting: none, "
                                      "metadata_columns: [channel], max_train_rows: 50}\n"))
    new = cfg.data.for_written_files(train="/w/train.csv", test="/w/test.csv", text_pair_column=None, id_column="id")
    assert (new.train, new.test, new.delimiter, new.encoding, new.label_map, new.quoting, new.header, new.columns) == (
        "/w/train.csv", "/w/test.csv", None, "utf-8", None, "auto", True, None)
    assert (new.text_column, new.label_column, new.id_column, new.max_train_rows) == ("text", "label", "id", None)
    assert new.metadata_columns == ["channel"]  # what the rows carry stays
