"""Seeded stratified splits: deterministic, every label in every split, fractions as configured."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tunekit.data import prepare, read_rows
from tunekit.data.split import allocate, make_splits, stratified_sample

PER_LABEL = {"a": 40, "b": 40, "c": 40}


def _split(project, **data):
    project.labelled_csv("train.csv", PER_LABEL)
    cfg = project.config(train="train.csv", **data)
    rows = read_rows("train.csv", cfg)
    return make_splits(rows, None, None, cfg.data, Path("train.csv"))


def _ids(rows):
    return [row["id"] for row in rows]


def test_split_sizes_follow_the_fractions_and_every_label_is_in_every_split(project):
    splits = _split(project)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 84, "validation": 12, "test": 24}
    assert Counter(row["label"] for row in splits["test"]) == {"a": 8, "b": 8, "c": 8}
    assert Counter(row["label"] for row in splits["validation"]) == {"a": 4, "b": 4, "c": 4}
    all_ids = _ids(splits["train"]) + _ids(splits["validation"]) + _ids(splits["test"])
    assert len(all_ids) == len(set(all_ids)) == 120


def test_split_is_deterministic_for_a_seed_and_changes_with_it(project):
    first, second = _split(project), _split(project)
    assert {k: _ids(v) for k, v in first.items()} == {k: _ids(v) for k, v in second.items()}
    other = _split(project, split={"seed": 99})
    assert _ids(other["test"]) != _ids(first["test"])


def test_rows_keep_file_order_within_a_split(project):
    for rows in _split(project).values():
        lines = [int(row["id"].split("-")[1]) for row in rows]
        assert lines == sorted(lines)


def test_test_rows_do_not_change_when_a_validation_file_is_added(project):
    without = _split(project)
    project.write("valid.csv", "text,label\nv,a\nw,b\nx,c\n")
    cfg = project.config(train="train.csv", validation="valid.csv")
    rows = read_rows("train.csv", cfg)
    valid = read_rows("valid.csv", cfg, "data.validation", ["a", "b", "c"])
    with_file = make_splits(rows, valid, None, cfg.data, Path("train.csv"))
    assert _ids(with_file["test"]) == _ids(without["test"])
    assert len(with_file["train"]) == 96


def test_max_train_rows_samples_train_only_keeping_label_shares(project):
    full = _split(project)
    sampled = _split(project, max_train_rows=30)
    assert Counter(row["label"] for row in sampled["train"]) == {"a": 10, "b": 10, "c": 10}
    assert set(_ids(sampled["train"])) <= set(_ids(full["train"]))
    assert _ids(sampled["test"]) == _ids(full["test"]) and _ids(sampled["validation"]) == _ids(full["validation"])


def test_sample_keeps_rare_labels():
    rows = [{"id": str(i), "label": "big"} for i in range(100)] + [{"id": "r1", "label": "rare"}, {"id": "r2", "label": "tiny"}]
    sample = stratified_sample(rows, 10, seed=1)
    assert Counter(row["label"] for row in sample) == {"big": 8, "rare": 1, "tiny": 1}
    assert stratified_sample(rows, 10, seed=1) == sample


def test_allocate_is_exact_and_proportional():
    assert allocate({"a": 50, "b": 30, "c": 20}, 10) == {"a": 5, "b": 3, "c": 2}
    assert sum(allocate({"a": 7, "b": 5, "c": 3}, 8).values()) == 8
    assert allocate({"a": 10, "b": 5, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}


def test_prepare_splits_are_identical_in_two_workspaces(project, tmp_path):
    project.labelled_csv("train.csv", PER_LABEL)
    first = prepare(project.config(train="train.csv"))
    (project.root / "ws").rename(project.root / "old-ws")
    second = prepare(project.config(train="train.csv"))
    assert not second.reused
    assert second.fingerprint == first.fingerprint
    assert second.test["id"] == first.test["id"]
