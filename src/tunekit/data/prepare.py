"""``prepare(cfg)``: from the configured files to frozen, fingerprinted splits and a data report.

The recipe: hash the inputs; if splits for exactly these inputs and settings were frozen before,
load them, otherwise read and validate every file (all bad rows are errors), split, and freeze;
then write the data report for the splits in force. For ``task: regression`` the label column
holds a number (``labels`` is empty) and the report describes the target instead of label counts.

With ``eval.max_test_rows`` the test split handed to later stages is a stratified, seeded sample of
the frozen one (``sample_test``): the frozen split and its fingerprint stay whole, ``test_fingerprint``
names the rows actually scored, and ``test_sample`` (also in the data report, as a warning) says
how many of how many, so no score on it passes for one on the full test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from tunekit import task_kinds
from tunekit.config import FILE_OPTIONS, ReadOptions, TunekitConfig
from tunekit.data import store
from tunekit.data.markdown import render_report_markdown
from tunekit.data.read import read_table
from tunekit.data.report import build_report
from tunekit.data.split import (
    make_splits,
    remove_leaked,
    stratified_sample,
    target_bins,
)
from tunekit.data.validate import canonical_rows, constant_target_error, label_set_error


@dataclass(frozen=True)
class PreparedData:
    """The frozen splits every later stage reads, with the label map and the dataset version id.

    ``task`` is ``classification`` (``label`` holds label ids into ``labels``) or ``regression``
    (``label`` holds the float target and ``labels`` is empty).
    """

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    labels: list[str]
    fingerprint: str
    test_fingerprint: str
    directory: Path
    report: dict
    reused: bool
    task: str = "classification"
    multitask: bool = False  # data.task_column: labels read "task:label", one label set per task
    test_sample: dict | None = None  # eval.max_test_rows: how many of how many test rows are scored (see ``prepare``)

    @property
    def regression(self) -> bool:
        return task_kinds.kind(self.task).numeric

    @property
    def tasks(self) -> dict[str, list[int]] | None:
        """Label ids per task for a multi-task run (``data.task_column``), else None."""
        from tunekit.data.multitask import tasks_of

        return tasks_of(self.labels) if self.multitask else None


def prepare(cfg: TunekitConfig, tokenizer=None) -> PreparedData:
    """Frozen splits for ``cfg.data``, made now or reused; ``tokenizer`` adds token lengths to the report."""
    sources = store.source_files(cfg)
    key = store.source_key(cfg, sources)
    frozen = store.load_frozen(cfg, key)
    reused = frozen is not None
    if frozen is None:
        rows, labels = read_splits(cfg, {s.role: s.path for s in sources})
        removed = remove_leaked(rows, cfg.data.duplicates_policy, {s.role: s.path for s in sources})
        frozen = store.freeze(cfg, key, sources, rows, labels, {"leaked_rows_removed": removed} if removed else None)
    report = build_report(cfg, frozen.rows, frozen.labels, frozen.meta, tokenizer)
    test, test_fingerprint, sample = limit_test(cfg, frozen.datasets["test"], frozen.rows["test"], frozen.test_fingerprint)
    if sample is not None:
        report["test_sample"] = sample
        report["warnings"].append(f"test metrics are on a sample of {sample['scored']} of the {sample['of']} test rows "
                                  f"(eval.max_test_rows {sample['max_test_rows']}, stratified by {sample['stratified_by']}, "
                                  f"seed {sample['seed']}), not on the full test set")
    store.write_json(frozen.directory / "report.json", report)
    (frozen.directory / "report.md").write_text(render_report_markdown(report), encoding="utf-8")
    return PreparedData(
        train=frozen.datasets["train"], validation=frozen.datasets["validation"], test=test,
        labels=frozen.labels, fingerprint=frozen.fingerprint, test_fingerprint=test_fingerprint,
        directory=frozen.directory, report=report, reused=reused, task=cfg.task,
        multitask=cfg.data.task_column is not None, test_sample=sample,
    )


def limit_test(cfg: TunekitConfig, test: datasets.Dataset, rows: list[dict], test_fingerprint: str
               ) -> tuple[datasets.Dataset, str, dict | None]:
    """The test split later stages score under ``eval.max_test_rows``: (dataset, its test fingerprint,
    what was sampled or None). ``rows`` are the split's canonical rows; anything that rebuilds
    ``PreparedData`` from a frozen folder (reproducing a run) applies it too, to score the same rows."""
    regression = task_kinds.kind(cfg.task).numeric
    keep = sample_test(rows, cfg.eval.max_test_rows, cfg.data.split.seed, regression)
    if keep is None:
        return test, test_fingerprint, None
    scored = store.split_fingerprint([rows[i] for i in keep])
    sample = {"max_test_rows": cfg.eval.max_test_rows, "scored": len(keep), "of": len(rows), "seed": cfg.data.split.seed,
              "stratified_by": "target quantile" if regression else "label", "test_fingerprint": scored,
              "frozen_test_fingerprint": test_fingerprint}
    return test.select(keep), scored, sample


def sample_test(rows: list[dict], max_rows: int | None, seed: int, regression: bool = False) -> list[int] | None:
    """Indices (in split order) of a seeded sample of ``max_rows`` test rows, stratified by label (by
    quantile bins of the target for regression); None when every row is scored."""
    if max_rows is None or max_rows >= len(rows):
        return None
    indexed = [{"label": row["label"], "index": i} for i, row in enumerate(rows)]
    strata = target_bins([row["label"] for row in rows], max_rows) if regression else None
    return [row["index"] for row in stratified_sample(indexed, max_rows, seed, strata)]


def read_splits(cfg: TunekitConfig, paths: dict[str, Path]) -> tuple[dict[str, list[dict]], list[str]]:
    """Read and validate the files, then split: (rows per split, labels sorted by name; none for regression)."""
    regression = task_kinds.kind(cfg.task).numeric
    train = read_rows(paths["train"], cfg, "data.train")
    labels = [] if regression else sorted({row["label"] for row in train})
    if regression and len({row["label"] for row in train}) < 2:
        raise constant_target_error(str(paths["train"]), train[0]["label"])
    if not regression and len(labels) < 2:
        raise label_set_error(str(paths["train"]), labels)
    given = {role: read_rows(paths[role], cfg, f"data.{role}", labels) if role in paths else None
             for role in ("validation", "test")}
    rows = make_splits(train, given["validation"], given["test"], cfg.data, paths["train"], regression)
    return rows, labels


def read_rows(path: str | Path, cfg: TunekitConfig, key: str = "data.train", known_labels: list[str] | None = None) -> list[dict]:
    """Canonical rows of one file (``{id, text, [text_pair], label, _at}``), every bad row an error.

    ``path`` is resolved like a config path (relative to the config file) and read with the options
    of ``key`` (``data.train``: the section's, with ``data.train``'s own on top). With
    ``known_labels``, a label outside them is an error; validation and test files are read that way.
    For ``task: regression`` the label is the float target.
    """
    options = read_options(cfg, key)
    return canonical_rows(read_table(cfg.path(path), options), cfg.data, known_labels, task_kinds.kind(cfg.task).numeric)


def read_options(cfg: TunekitConfig, key: str) -> ReadOptions:
    """The reading options for config key ``key`` (``data.train``, ``data.validation``, ``data.test``)."""
    role = key.rsplit(".", 1)[-1]
    options = cfg.data.read_options(role) if role in store.SPLITS else None
    if options is None:  # a file the config does not name for this role: the section's options
        return ReadOptions(key=key, path="-", **{name: getattr(cfg.data, name) for name in FILE_OPTIONS})
    return options.model_copy(update={"key": key})


def summary(prepared: PreparedData) -> str:
    """A few plain-text lines for the terminal: sizes, fingerprint, lengths and every warning."""
    report = prepared.report
    rows, train_len = report["rows"], report["lengths"]["splits"]["train"]
    state = "reused frozen splits" if prepared.reused else "froze new splits"
    unit = report["lengths"]["unit"]
    if "target" in report:
        t = report["target"]["per_split"]["train"]
        what = f"target on train: mean {t['mean']:.4g}, std {t['std']:.4g}, min {t['min']:.4g}, median {t['p50']:.4g}, max {t['max']:.4g}"
    else:
        labels = report["labels"]
        ratio = labels["imbalance_ratio"]
        what = f"{labels['count']} labels" + (f" (largest / smallest train label: {ratio}x)" if ratio is not None else "")
    lines = [
        f"Data {report['name']}: {rows['train']} train / {rows['validation']} validation / {rows['test']} test rows, {what}",
        f"Fingerprint {prepared.fingerprint[:16]} ({state} in {prepared.directory})",
        f"Train lengths ({unit}): p50 {train_len['p50']}, p95 {train_len['p95']}, max {train_len['max']}",
    ]
    lines += [f"Warning: {w}" for w in report["warnings"]] or ["No warnings."]
    return "\n".join(lines)


def text_pairs(ds) -> list[str] | None:
    """The second texts of a split, or None for single-text tasks (what tokenizers and models take)."""
    return list(ds["text_pair"]) if "text_pair" in ds.column_names else None
