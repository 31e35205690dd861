"""`task: regression` data: numeric targets checked loudly, splits stratified by target quantiles,
float targets frozen, and a data report that describes the target instead of label counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import Value

from tunekit.config import load_config
from tunekit.data import prepare, read_rows, summary
from tunekit.data.split import make_splits, target_bins
from tunekit.errors import DataError


def regression_config(project, **data):
    path = project.root / "config.yaml"
    raw = {"name": "t", "task": "regression", "workspace": str(project.root / "ws"), "data": data}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(path)


def numbered_csv(project, name: str = "train.csv", n: int = 100, target=lambda i: i * 1.5) -> Path:
    return project.write(name, "text,label\n" + "".join(f"row number {i},{target(i)}\n" for i in range(n)))


def _error(cfg, path="train.csv") -> str:
    with pytest.raises(DataError) as info:
        read_rows(path, cfg, "data.train")
    return str(info.value)


def test_targets_become_floats_from_text_and_json_numbers(project):
    project.write("train.csv", "text,label\na, 3\nb,2.5\nc,-1e3\n")
    rows = read_rows("train.csv", regression_config(project, train="train.csv"))
    assert [row["label"] for row in rows] == [3.0, 2.5, -1000.0]
    project.write_jsonl("train.jsonl", [{"text": "a", "label": 4}, {"text": "b", "label": 0.25}])
    rows = read_rows("train.jsonl", regression_config(project, train="train.jsonl"))
    assert [row["label"] for row in rows] == [4.0, 0.25] and all(isinstance(row["label"], float) for row in rows)


def test_bad_targets_are_reported_together_with_file_line_and_column(project):
    project.write("train.csv", "text,score\nok,1\nwords,high\nnan one,nan\ninf one,inf\nempty,\nfine,2\n")
    msg = _error(regression_config(project, train="train.csv", label_column="score"))
    assert "4 problems" in msg
    assert 'train.csv line 3: column "score" holds \'high\', which is not a number' in msg
    assert 'train.csv line 4: column "score" is nan; a regression target must be a finite number' in msg
    assert 'train.csv line 5: column "score" is inf' in msg
    assert 'train.csv line 6: column "score" (the target) is empty' in msg


def test_json_booleans_and_lists_are_not_targets(project):
    project.write_jsonl("train.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": [1, 2]}, {"text": "c", "label": 1}])
    msg = _error(regression_config(project, train="train.jsonl"), "train.jsonl")
    assert "train.jsonl line 1" in msg and "boolean true, not a number" in msg
    assert "train.jsonl line 2" in msg and "list data, not a number" in msg


def test_a_constant_target_is_an_error(project):
    numbered_csv(project, target=lambda i: 7)
    with pytest.raises(DataError, match="every training row has the target 7; regression needs targets that vary"):
        prepare(regression_config(project, train="train.csv"))


def test_splits_are_stratified_by_target_quantiles_and_seeded(project):
    numbered_csv(project)  # targets 0, 1.5, ..., 148.5 in file order
    cfg = regression_config(project, train="train.csv")
    rows = read_rows("train.csv", cfg)
    splits = make_splits(rows, None, None, cfg.data, Path("train.csv"), regression=True)
    assert {name: len(split) for name, split in splits.items()} == {"train": 70, "validation": 10, "test": 20}
    # 10 target bins of 10 rows: the 20 test rows take 2 from each, so the test set spans the whole range
    deciles = Counter(int(row["label"] / 1.5) // 10 for row in splits["test"])
    assert deciles == {d: 2 for d in range(10)}
    again = make_splits(rows, None, None, cfg.data, Path("train.csv"), regression=True)
    assert [r["id"] for r in again["test"]] == [r["id"] for r in splits["test"]]
    other = regression_config(project, train="train.csv", split={"seed": 5})
    moved = make_splits(rows, None, None, other.data, Path("train.csv"), regression=True)
    assert [r["id"] for r in moved["test"]] != [r["id"] for r in splits["test"]]


def test_target_bins_are_equal_sized_even_with_ties():
    bins = target_bins([1.0] * 6 + [2.0] * 2 + [5.0] * 2, max_bins=5)
    assert Counter(bins) == {f"q{i}": 2 for i in range(5)}
    assert target_bins([3.0, 1.0, 2.0], max_bins=10) == ["q0", "q0", "q0"]  # too few rows for more than one bin


def test_max_train_rows_samples_across_the_target_range(project):
    numbered_csv(project, n=200)
    data = prepare(regression_config(project, train="train.csv", max_train_rows=40))
    train = np.asarray(data.train["label"])
    assert len(train) == 40
    assert train.min() < 30 and train.max() > 270  # not just one end of the range


def test_frozen_regression_data_keeps_float_targets_and_is_reused(project):
    numbered_csv(project, n=60)
    first = prepare(regression_config(project, train="train.csv"))
    assert first.task == "regression" and first.regression and first.labels == []
    assert first.train.features["label"] == Value("float64")
    assert json.loads((first.directory / "meta.json").read_text())["task"] == "regression"
    second = prepare(regression_config(project, train="train.csv"))
    assert second.reused and second.fingerprint == first.fingerprint
    assert second.train.to_list() == first.train.to_list()
    assert isinstance(second.test[0]["label"], float)


def test_the_same_file_as_classification_gets_its_own_frozen_splits(project):
    numbered_csv(project, n=40, target=lambda i: i % 2)  # 0/1: valid labels and valid numbers
    reg = prepare(regression_config(project, train="train.csv"))
    cls = prepare(project.config(train="train.csv"))
    assert not cls.reused and cls.labels == ["0", "1"] and cls.fingerprint != reg.fingerprint
    assert cls.train.features["label"].names == ["0", "1"]


def test_report_describes_the_target_per_split(project):
    numbered_csv(project)
    numbered_csv(project, "test.csv", n=20, target=lambda i: 1000 + i)  # far above anything in train
    data = prepare(regression_config(project, train="train.csv", test="test.csv"))
    target = data.report["target"]["per_split"]
    assert "labels" not in data.report
    train = np.asarray(data.train["label"])
    assert target["train"]["n"] == len(train) and target["train"]["mean"] == pytest.approx(train.mean())
    assert target["train"]["std"] == pytest.approx(train.std()) and target["train"]["min"] == train.min()
    assert target["test"]["p50"] == pytest.approx(1009.5)
    assert any("test target mean 1010" in w and "above the train mean" in w for w in data.report["warnings"])
    md = (data.directory / "report.md").read_text()
    assert "## Target (regression)" in md and "| test | 20 | 1010 |" in md
    assert "target on train: mean" in summary(data)


def test_label_noise_is_skipped_for_regression(project):
    from tunekit.data import noise

    numbered_csv(project, n=60)
    assert noise.for_prepared(prepare(regression_config(project, train="train.csv"))) is None
