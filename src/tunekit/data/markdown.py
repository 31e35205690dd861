"""Render the data report dict as Markdown: headings and tables a person reads before training."""

from __future__ import annotations

SPLITS = ("train", "validation", "test")


def render_report_markdown(report: dict) -> str:
    """The report as Markdown; takes the dict (or report.json) so it can be re-rendered any time."""
    parts = [
        f"# Data report: {report['name']}",
        f"Dataset fingerprint `{report['fingerprint'][:16]}`, test fingerprint `{report['test_fingerprint'][:16]}`.",
        _warnings(report["warnings"]),
        _sources(report),
        _target(report) if "target" in report else _labels(report),
        _duplicates(report["duplicates"]),
        _leakage(report["leakage"]),
        _lengths(report["lengths"]),
        *([_pii(report["pii"])] if "pii" in report else []),
    ]
    return "\n\n".join(parts) + "\n"


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; cells are escaped so a `|` or newline in a text cannot break it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return "## Warnings\n\nNone."
    return "## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings)


def _sources(report: dict) -> str:
    files = table(["role", "file", "sha256"], [[s["role"], s["path"], s["sha256"][:16]] for s in report["sources"]])
    rows = table(["split", "rows"], [[name, report["rows"][name]] for name in SPLITS])
    split = report["split"]
    made = ", ".join(split["made"]) or "none (all splits given as files)"
    note = f"Split off the training file: {made} (seed {split['seed']}); max_train_rows: {split['max_train_rows']}."
    return f"## Rows\n\n{files}\n\n{rows}\n\n{note}"


def _labels(report: dict) -> str:
    labels = report["labels"]
    per_split = labels["per_split"]
    body = table(["label", *SPLITS], [[name, *(per_split[s][name] for s in SPLITS)] for name in labels["names"]])
    ratio = labels["imbalance_ratio"]
    note = f"Imbalance (largest / smallest training label): {ratio if ratio is not None else 'a label has no training rows'}."
    return f"## Labels ({labels['count']})\n\n{body}\n\n{note}"


def _target(report: dict) -> str:
    """Regression: the target's distribution per split, where label counts would be."""
    per_split = report["target"]["per_split"]
    keys = ("mean", "std", "min", "p25", "p50", "p75", "max")
    rows = [[name, per_split[name]["n"], *(f"{per_split[name][k]:.4g}" if k in per_split[name] else None for k in keys)] for name in SPLITS]
    body = table(["split", "rows", "mean", "std", "min", "p25", "median", "p75", "max"], rows)
    return f"## Target (regression)\n\n{body}\n\nSplits made off the training file are stratified by quantile bins of the target."


def _duplicates(dup: dict) -> str:
    rows = [[kind, dup[kind]["rows"], dup[kind]["groups"], dup[kind]["conflicting_labels"]] for kind in ("exact", "normalised")]
    body = table(["kind", "repeated rows", "distinct texts", "with conflicting labels"], rows)
    examples = dup["normalised"]["examples"]
    pair = any("text_pair" in e for e in examples)
    if examples:
        body += "\n\nExamples (normalised):\n\n" + table(
            ["text", *(["text pair"] if pair else []), "count", "labels", "ids"],
            [[e["text"], *([e.get("text_pair")] if pair else []), e["count"], ", ".join(map(str, e["labels"])), ", ".join(e["ids"])]
             for e in examples])
    return "## Duplicates within train\n\nNormalised: lowercased, punctuation removed, whitespace collapsed.\n\n" + body


def _leakage(leakage: dict) -> str:
    rows = [[name, leak["exact"], leak["normalised"], f"{leak['fraction_exact']:.2%}"] for name, leak in leakage.items()]
    body = table(["split", "exact in train", "normalised in train", "fraction exact"], rows)
    for name, leak in leakage.items():
        if leak["examples"]:
            pair = any("text_pair" in e for e in leak["examples"])
            body += f"\n\n{name.capitalize()} rows also in train:\n\n" + table(
                ["id", "label", "text", *(["text pair"] if pair else [])],
                [[e["id"], e["label"], e["text"], *([e.get("text_pair")] if pair else [])] for e in leak["examples"]])
    return "## Leakage into train\n\n" + body


def _lengths(lengths: dict) -> str:
    over = lengths["unit"] == "tokens"
    header = ["split", "min", "mean", "p50", "p95", "max"] + ([f"over max_length ({lengths['max_length']})"] if over else [])
    rows = []
    for name in SPLITS:
        s = lengths["splits"][name]
        rows.append([name, s["min"], s["mean"], s["p50"], s["p95"], s["max"]] + ([s["over_max_length"]] if over else []))
    note = f"\n\n{lengths['note']}." if lengths["note"] else ""
    return f"## Lengths ({lengths['unit']})\n\n{table(header, rows)}{note}"


def _pii(report: dict) -> str:
    from tunekit.data import pii_scan

    return pii_scan.markdown(report)
