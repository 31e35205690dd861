"""The data report: what someone should know about the data before trusting a score made on it.

Duplicates inflate a label's weight; a test row that also sits in train makes the test score
optimistic; a rare label gets noisy metrics; truncated inputs lose information. None of these stop
a run, so they are counted, given a few examples, and repeated as plain-language warnings.
For ``task: regression`` the label section becomes target statistics per split (mean, spread,
quantiles), and a validation or test split whose target sits far from train's is a warning.
Everything here is JSON-serialisable; ``markdown.py`` renders it for people.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from tunekit import task_kinds
from tunekit.config import TunekitConfig
from tunekit.data import pii_scan
from tunekit.data.lengths import length_report

MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 200
IMBALANCE_WARNING = 10.0
TARGET_SHIFT_WARNING = 0.5  # |split mean - train mean| in training standard deviations
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def build_report(cfg: TunekitConfig, rows: dict[str, list[dict]], labels: list[str], meta: dict, tokenizer=None) -> dict:
    """The report dict for the three splits in ``rows`` (canonical rows with label names)."""
    report = {
        "name": cfg.name,
        "fingerprint": meta["fingerprint"],
        "test_fingerprint": meta["test_fingerprint"],
        "sources": meta["sources"],
        "split": meta["split"],
        "rows": {name: len(split) for name, split in rows.items()},
        **({"target": target_report(rows)} if task_kinds.kind(cfg.task).numeric else {"labels": label_report(rows, labels)}),
        "duplicates": duplicate_report(rows["train"]),
        "leakage": {name: leakage_report(rows["train"], rows[name]) for name in ("validation", "test")},
        "lengths": length_report(rows, cfg.model.max_length, tokenizer),
        "leaked_rows_removed": meta.get("leaked_rows_removed", 0),
        "pii": pii_scan.scan(rows, lambda row: (row["text"], row.get("text_pair", "")), lambda row: row["id"]),
    }
    report["warnings"] = warnings(report)
    return report


def label_report(rows: dict[str, list[dict]], labels: list[str]) -> dict:
    """Counts per label and split, and how skewed the training labels are (largest / smallest)."""
    counts = {name: Counter(row["label"] for row in split) for name, split in rows.items()}
    per_split = {name: {label: counts[name][label] for label in labels} for name in rows}
    train = list(per_split["train"].values())
    ratio = round(max(train) / min(train), 2) if min(train) > 0 else None
    return {"names": labels, "count": len(labels), "per_split": per_split, "imbalance_ratio": ratio}


def target_report(rows: dict[str, list[dict]]) -> dict:
    """Statistics of the regression target per split: count, mean, std, min, quartiles, max."""
    import numpy as np

    per_split = {}
    for name, split in rows.items():
        values = np.asarray([row["label"] for row in split], dtype=float)
        if not len(values):
            per_split[name] = {"n": 0}
            continue
        p25, p50, p75 = np.percentile(values, [25, 50, 75])
        per_split[name] = {"n": int(len(values)), "mean": float(values.mean()), "std": float(values.std()),
                           "min": float(values.min()), "p25": float(p25), "p50": float(p50), "p75": float(p75),
                           "max": float(values.max())}
    return {"per_split": per_split}


def normalise(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed: "Hello,  World!" == "hello world"."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


def exact_key(row: dict) -> tuple[str, str]:
    return row["text"], row.get("text_pair", "")


def normalised_key(row: dict) -> tuple[str, str]:
    return normalise(row["text"]), normalise(row.get("text_pair", ""))


def duplicate_report(train: list[dict]) -> dict:
    """Exact and normalised duplicates within train."""
    return {"exact": _duplicates(train, exact_key), "normalised": _duplicates(train, normalised_key)}


def _duplicates(rows: list[dict], key) -> dict:
    """``rows``: rows that repeat an earlier one; ``groups``: distinct repeated texts; ``conflicting``: groups with several labels."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    repeated = [group for group in groups.values() if len(group) > 1]
    conflicting = [group for group in repeated if len({row["label"] for row in group}) > 1]
    examples = [{"text": _short(group[0]["text"]), **_pair(group[0]), "count": len(group), "ids": [row["id"] for row in group[:MAX_EXAMPLES]],
                 "labels": sorted({row["label"] for row in group})} for group in (conflicting + repeated)[:MAX_EXAMPLES]]
    return {"rows": sum(len(group) - 1 for group in repeated), "groups": len(repeated),
            "conflicting_labels": len(conflicting), "examples": examples}


def leakage_report(train: list[dict], other: list[dict]) -> dict:
    """Rows of ``other`` whose text also appears in train, exactly and after normalising."""
    exact_train = {exact_key(row) for row in train}
    norm_train = {normalised_key(row) for row in train}
    exact = [row for row in other if exact_key(row) in exact_train]
    normalised = [row for row in other if normalised_key(row) in norm_train]
    return {
        "exact": len(exact),
        "normalised": len(normalised),
        "fraction_exact": round(len(exact) / len(other), 4) if other else 0.0,
        "examples": [{"id": row["id"], "text": _short(row["text"]), **_pair(row), "label": row["label"]} for row in normalised[:MAX_EXAMPLES]],
    }


def warnings(report: dict) -> list[str]:
    """The findings worth reading even when nobody opens the tables."""
    out = []
    dup = report["duplicates"]
    if dup["exact"]["rows"]:
        out.append(f"{dup['exact']['rows']} training rows repeat an earlier training row exactly")
    if dup["normalised"]["conflicting_labels"]:
        what = "targets" if "target" in report else "labels"
        out.append(f"{dup['normalised']['conflicting_labels']} training texts appear with different {what}")
    if report.get("leaked_rows_removed"):
        out.append(f"{report['leaked_rows_removed']} training rows were left out because their text sits exactly in the "
                   "validation or test split (data.duplicates: drop)")
    for name, leak in report["leakage"].items():
        if leak["normalised"]:
            out.append(f"{leak['normalised']} {name} rows also appear in train ({leak['exact']} exactly, the rest after "
                       f"normalising): {name} scores will be optimistic")
    out += _target_warnings(report["target"]) if "target" in report else _label_warnings(report["labels"])
    out += pii_scan.warnings(report.get("pii", {}))
    lengths = report["lengths"]
    for name, split in lengths["splits"].items():
        if split.get("over_max_length"):
            out.append(f"{split['over_max_length']} {name} rows are longer than model.max_length = {lengths['max_length']} tokens and will be truncated")
    return out


def _label_warnings(labels: dict) -> list[str]:
    out = []
    ratio = labels["imbalance_ratio"]
    if ratio is not None and ratio >= IMBALANCE_WARNING:
        out.append(f"labels are imbalanced: the largest training label has {ratio}x the rows of the smallest")
    for name, counts in labels["per_split"].items():
        missing = [label for label, count in counts.items() if count == 0]
        if missing:
            shown = ", ".join(missing[:MAX_EXAMPLES]) + (", ..." if len(missing) > MAX_EXAMPLES else "")
            out.append(f"{len(missing)} label(s) have no {name} rows ({shown})")
    return out


def _target_warnings(target: dict) -> list[str]:
    """A split whose target mean is far from train's: its scores measure another population."""
    train, out = target["per_split"]["train"], []
    for name in ("validation", "test"):
        split = target["per_split"].get(name, {})
        if not split.get("n") or not train.get("std"):
            continue
        shift = (split["mean"] - train["mean"]) / train["std"]
        if abs(shift) >= TARGET_SHIFT_WARNING:
            out.append(f"the {name} target mean {split['mean']:.4g} is {abs(shift):.1f} training standard deviations "
                       f"{'above' if shift > 0 else 'below'} the train mean {train['mean']:.4g}: {name} scores describe other values than training saw")
    return out


def _pair(row: dict) -> dict:
    """A sentence-pair row's second text, for the examples (``{}`` for single texts)."""
    return {"text_pair": _short(row["text_pair"])} if "text_pair" in row else {}


def _short(text: str) -> str:
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS - 1] + "…"
