"""Seeded, stratified train/validation/test splits, and a stratified sample of the training rows.

Stratifying keeps every label's share the same in each split, so a rare label is not missing from
the test set by bad luck. The same rows and seed always give the same split; rows keep their file
order inside each split so a split can be read next to the source file. Test is split off first,
then validation from the rest, so asking for a validation file later does not change the test rows.

A regression target has no labels to stratify by, so its rows are stratified by quantile bins of
the target instead: each split then spans the target's whole range, and a test set cannot end up
holding only the small values by bad luck.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

from tunekit.config import DataConfig
from tunekit.data.problems import Problems
from tunekit.errors import DataError

MAX_LOCATIONS_SHOWN = 3
MAX_TARGET_BINS = 10


def make_splits(train: list[dict], validation: list[dict] | None, test: list[dict] | None,
                data: DataConfig, train_path: Path, regression: bool = False) -> dict[str, list[dict]]:
    """The three splits: given files are used as they are, missing ones are split off ``train``.

    ``regression``: the rows' labels are numbers; they are stratified by quantile bins of them.
    """
    to_split = [name for name, rows in (("test", test), ("validation", validation)) if rows is None]
    if not regression:
        check_class_sizes(train, to_split, train_path)
    held: dict[str, list[dict]] = {}
    rest = train
    for name in to_split:
        size = math.ceil(getattr(data.split, name) * len(train))
        if regression:
            check_target_sizes(rest, size, name, train_path)
        strata = target_bins([row["label"] for row in rest], min(size, len(rest) - size)) if regression else None
        rest, held[name] = stratified_split(rest, size, name, data.split.seed, train_path, strata)
    if data.max_train_rows is not None:
        strata = target_bins([row["label"] for row in rest], data.max_train_rows) if regression else None
        rest = stratified_sample(rest, data.max_train_rows, data.split.seed, strata)
    return {
        "train": rest,
        "validation": validation if validation is not None else held["validation"],
        "test": test if test is not None else held["test"],
    }


def check_class_sizes(rows: list[dict], to_split: list[str], path: Path) -> None:
    """Each label needs one row in train plus one in every split made from it."""
    if not to_split:
        return
    need = 1 + len(to_split)
    counts = Counter(row["label"] for row in rows)
    made = " and ".join(to_split)
    files = " and ".join(f"`data.{name}`" for name in to_split)
    problems = Problems()
    for label, count in sorted(counts.items(), key=lambda item: (item[1], item[0])):
        if count >= need:
            break
        at = ", ".join(row["_at"] for row in rows if row["label"] == label)
        problems.add(
            f'{path}: label "{label}" has only {count} row(s) ({at}), but splitting off {made} needs at least {need} '
            f"per label (one in each split); add rows with this label, merge it into a similar label or remove it, "
            f"or give explicit {files} file(s)"
        )
    problems.raise_if_any(str(path))


def check_target_sizes(rows: list[dict], size: int, name: str, path: Path) -> None:
    """A regression split needs rows on both sides, and two training rows to learn a spread from."""
    if len(rows) - size < 2:
        raise DataError(f"{path}: `data.split.{name}` holds out {size} of {len(rows)} rows, leaving fewer than 2 to train on; "
                        f"add rows, lower `data.split.{name}`, or give an explicit `data.{name}` file")


def target_bins(targets: list[float], max_bins: int) -> list[str]:
    """Quantile bin of each target ("q0" lowest), at most ``max_bins`` and ``MAX_TARGET_BINS`` bins
    of (nearly) equal size, so every bin can put at least one row on each side of a split.

    Bins come from the rank of each value (ties broken by row order), not from cut points, so a
    target with many equal values still gives equal-sized bins and the same rows always get the
    same bins.
    """
    import numpy as np

    n_bins = max(1, min(MAX_TARGET_BINS, max_bins, len(targets) // 2))
    ranks = np.empty(len(targets), dtype=int)
    ranks[np.argsort(np.asarray(targets, dtype=float), kind="stable")] = np.arange(len(targets))
    return [f"q{int(r * n_bins // max(len(targets), 1))}" for r in ranks]


def stratified_split(rows: list[dict], size: int, name: str, seed: int, path: Path,
                     strata: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Split ``size`` rows off ``rows`` (stratified by label, or by ``strata`` when given); returns (rest, held out)."""
    from sklearn.model_selection import train_test_split

    labels = strata if strata is not None else [row["label"] for row in rows]
    n_labels = len(set(labels))
    if size < n_labels or len(rows) - size < n_labels:
        raise DataError(
            f"{path}: `data.split.{name}` holds out {size} of {len(rows)} rows, but a stratified split needs at least "
            f"one row per label ({n_labels} labels) on each side; add rows, change `data.split.{name}`, "
            f"or give an explicit `data.{name}` file"
        )
    try:
        keep, held = train_test_split(list(range(len(rows))), test_size=size, stratify=labels, random_state=seed)
    except ValueError as exc:
        raise DataError(f"{path}: cannot split off {name} rows stratified by label ({exc}); add rows to the rarest "
                        f"labels, or give an explicit `data.{name}` file") from None
    return [rows[i] for i in sorted(keep)], [rows[i] for i in sorted(held)]


def stratified_sample(rows: list[dict], size: int, seed: int, strata: list[str] | None = None) -> list[dict]:
    """A seeded sample of ``size`` rows with each label's (or stratum's) share kept, and every label kept if ``size`` allows."""
    if len(rows) <= size:
        return rows
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_label[strata[i] if strata is not None else row["label"]].append(i)
    quotas = allocate({label: len(idx) for label, idx in by_label.items()}, size)
    rng = random.Random(seed)
    chosen = [i for label in sorted(by_label) for i in rng.sample(by_label[label], quotas[label])]
    return [rows[i] for i in sorted(chosen)]


def allocate(counts: dict[str, int], size: int) -> dict[str, int]:
    """Share ``size`` among labels in proportion to ``counts`` (largest remainder), at least 1 each if possible."""
    total = sum(counts.values())
    floor = 1 if size >= len(counts) else 0
    exact = {label: count * size / total for label, count in counts.items()}
    quota = {label: min(counts[label], max(floor, int(exact[label]))) for label in counts}
    while sum(quota.values()) > size:  # the floor of 1 gave small labels more than their share
        over = max((label for label in quota if quota[label] > floor), key=lambda lb: (quota[lb] - exact[lb], lb))
        quota[over] -= 1
    by_remainder = sorted(counts, key=lambda lb: (int(exact[lb]) - exact[lb], lb))
    for label in itertools.cycle(by_remainder):
        if sum(quota.values()) >= size:
            break
        if quota[label] < counts[label]:
            quota[label] += 1
    return quota


def remove_leaked(rows: dict[str, list[dict]], policy: str, files: dict[str, Path]) -> int:
    """Apply ``data.duplicates`` to training rows whose input (text and text pair) sits exactly in
    validation or test: ``keep`` them (the report warns), ``drop`` them from train (returns how many),
    or ``error`` naming each. Validation and test rows are never touched: they are what is measured."""
    if policy == "keep":
        return 0
    held = {}
    for name in ("validation", "test"):
        for row in rows[name]:
            held.setdefault((row["text"], row.get("text_pair", "")), (name, row))
    leaked = [row for row in rows["train"] if (row["text"], row.get("text_pair", "")) in held]
    if policy == "error":
        problems = Problems()
        for row in leaked:
            name, other = held[(row["text"], row.get("text_pair", ""))]
            problems.add(f"{files['train']} {row['_at']}: this training row's text also sits in the {name} split exactly "
                         f"(row {other['id']}, {other['_at']}); remove it, or set `data.duplicates: drop` to leave such rows "
                         "out of train (counted in the data report), or `keep` to train on them (the report warns)")
        problems.raise_if_any(str(files["train"]))
    rows["train"] = [row for row in rows["train"] if (row["text"], row.get("text_pair", "")) not in held]
    return len(leaked)
