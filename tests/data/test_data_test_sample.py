"""``eval.max_test_rows`` for classification and regression: a stratified, seeded sample of the test
split that every scorer sees, recorded so that no one takes it for the full test set."""

from __future__ import annotations

import json
from collections import Counter

import yaml

from tunekit import baseline, tasks
from tunekit.config import load_config
from tunekit.data import prepare, summary
from tunekit.data.prepare import sample_test
from tunekit.data.store import split_fingerprint
from tunekit.report import markdown


def _config(project, max_test_rows: int | None, task: str = "classification", train: str = "train.csv"):
    raw = {"name": "t", "task": task, "workspace": str(project.root / "ws"),
           "data": {"train": train, "split": {"validation": 0.1, "test": 0.4, "seed": 7}},
           "eval": {"max_test_rows": max_test_rows} if max_test_rows else {}}
    (project.root / "config.yaml").write_text(yaml.safe_dump(raw))
    return load_config(project.root / "config.yaml")


def test_classification_scores_a_stratified_seeded_sample_and_says_so(project):
    project.labelled_csv("train.csv", {"big": 60, "mid": 30, "small": 10})
    full = prepare(_config(project, None))
    assert len(full.test) == 40 and full.test_sample is None and "test_sample" not in full.report

    data = prepare(_config(project, 20))

    assert data.reused and data.fingerprint == full.fingerprint  # the frozen splits are the same, whole
    assert len(data.test) == 20
    assert Counter(data.labels[i] for i in data.test["label"]) == {"big": 12, "mid": 6, "small": 2}  # shares of 24/12/4
    assert set(data.test["id"]) < set(full.test["id"])
    rows = [{**r, "label": data.labels[r["label"]]} for r in data.test.to_list()]
    assert data.test_fingerprint == split_fingerprint(rows) != full.test_fingerprint
    assert data.test_sample == {"max_test_rows": 20, "scored": 20, "of": 40, "seed": 7, "stratified_by": "label",
                                "test_fingerprint": data.test_fingerprint, "frozen_test_fingerprint": full.test_fingerprint}
    meta = json.loads((data.directory / "meta.json").read_text())
    assert meta["test_fingerprint"] == full.test_fingerprint and meta["rows"]["test"] == 40
    warning = "test metrics are on a sample of 20 of the 40 test rows (eval.max_test_rows 20, stratified by label, seed 7)"
    assert any(w.startswith(warning) for w in data.report["warnings"]) and warning in summary(data)
    assert warning in (data.directory / "report.md").read_text()
    assert json.loads((data.directory / "report.json").read_text())["test_sample"]["scored"] == 20

    card = tasks._labelled_data_card(data)  # what the report card's data section holds
    assert card["rows"]["test"] == 20 and card["test_sample"]["of"] == 40 and card["test_fingerprint"] == data.test_fingerprint
    assert "test metrics on a sample of 20 of the 40 test rows" in markdown._fingerprints(card)
    assert "sample" not in markdown._fingerprints(tasks._labelled_data_card(full))

    again = prepare(_config(project, 20))
    assert list(again.test["id"]) == list(data.test["id"])  # the same seed draws the same rows
    result = baseline.run(_config(project, 20), data)
    assert result.probs.shape == (20, 3)  # the baseline is scored on the sampled rows


def test_a_cap_at_or_above_the_test_size_changes_nothing(project):
    project.labelled_csv("train.csv", {"a": 20, "b": 20})
    full = prepare(_config(project, None))
    capped = prepare(_config(project, len(full.test)))
    assert capped.test_sample is None and capped.test_fingerprint == full.test_fingerprint and len(capped.test) == len(full.test)


def test_regression_samples_across_the_target_range(project):
    lines = ["text,label"] + [f"item number {i} costs {i},{float(i)}" for i in range(100)]
    project.write("prices.csv", "\n".join(lines) + "\n")
    data = prepare(_config(project, 10, task="regression", train="prices.csv"))
    values = sorted(data.test["label"])
    assert len(values) == 10 and data.test_sample["stratified_by"] == "target quantile" and data.test_sample["of"] == 40
    assert values[0] < 20 and values[-1] > 80  # one from each quantile bin, not ten from one end


def test_sample_test_is_deterministic_per_seed_and_keeps_every_label():
    rows = [{"label": label} for label in ["a"] * 50 + ["b"] * 45 + ["c"] * 5]
    first = sample_test(rows, 10, seed=1)
    assert first == sample_test(rows, 10, seed=1) != sample_test(rows, 10, seed=2)
    assert first == sorted(first) and Counter(rows[i]["label"] for i in first) == {"a": 5, "b": 4, "c": 1}
    assert sample_test(rows, None, seed=1) is None and sample_test(rows, 100, seed=1) is None
