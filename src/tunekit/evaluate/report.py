"""The report card of a run: ``report.md`` for people, ``report.json`` for machines.

The card is assembled by the pipeline from every stage's results; this module only renders it.
"""

from __future__ import annotations

import json
from pathlib import Path

METRIC_ORDER = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "mcc")


def write(card: dict, out_dir: Path) -> tuple[Path, Path]:
    md, js = out_dir / "report.md", out_dir / "report.json"
    js.write_text(json.dumps(card, indent=2, default=str))
    md.write_text(render_markdown(card))
    return md, js


def comparison_rows(card: dict) -> list[tuple[str, float, float, float]]:
    """(metric, baseline, fine-tuned, difference) for the headline metrics."""
    base, tuned = card["baseline"]["metrics"], card["model"]["metrics"]
    return [(m, base[m], tuned[m], tuned[m] - base[m]) for m in METRIC_ORDER]


def render_markdown(card: dict) -> str:
    primary = card["primary"]
    data, train, reg = card["data"], card["train"], card["registry"]
    lines = [
        f"# Report card: {card['name']} (run {card['run_id']})",
        "",
        f"**Verdict:** version {reg['version']} is **{reg['alias']}**: {reg['reason']}",
        "",
        "## Test metrics: fine-tuned vs baseline (same test rows)",
        "",
        f"| metric | baseline ({card['baseline']['name']}) | fine-tuned ({card['method']}) | difference |",
        "|---|---:|---:|---:|",
    ]
    for metric, b, t, d in comparison_rows(card):
        mark = " **(primary)**" if metric == primary else ""
        lines.append(f"| {metric}{mark} | {b:.4f} | {t:.4f} | {d:+.4f} |")
    champion = reg.get("champion")
    if champion:
        lines += ["", f"Champion before this run: v{champion['version']}, {primary} {champion['score']:.4f} ({champion['how']})."]
    lines += [
        "",
        "## Data",
        "",
        f"- dataset fingerprint `{data['fingerprint'][:16]}` ({'reused frozen splits' if data['reused'] else 'splits frozen now'}), test fingerprint `{data['test_fingerprint'][:16]}`",
        f"- rows: train {data['rows']['train']}, validation {data['rows']['validation']}, test {data['rows']['test']}; {data['n_labels']} labels",
        f"- full data report: `{data['report_path']}`",
        "",
        "## Training",
        "",
        f"- base model `{card['base_model']}`, method `{card['method']}`: {train['trainable_params']:,} of {train['total_params']:,} parameters trained ({100 * train['trainable_params'] / train['total_params']:.2f}%)",
        f"- {len(train['history'])} epoch(s), best epoch {train['best_epoch']} (validation {primary} {train['best_score']:.4f}){', stopped early' if train['stopped_early'] else ''}",
        f"- {train['seconds']:.0f} s, {train['train_examples_per_second']:.1f} training examples/s, peak memory {train['peak_memory_mb']:.0f} MB",
        "",
        "| epoch | train loss | validation " + primary + " | seconds |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {h['epoch']} | {h['train_loss']:.4f} | {h[f'val_{primary}']:.4f} | {h['seconds']} |" for h in train["history"]]
    worst = sorted(card["model"]["metrics"]["per_class_f1"].items(), key=lambda kv: kv[1])[:10]
    lines += ["", "## Weakest classes (test F1)", "", "| label | fine-tuned F1 | baseline F1 |", "|---|---:|---:|"]
    lines += [f"| {label} | {f1:.3f} | {card['baseline']['metrics']['per_class_f1'].get(label, 0.0):.3f} |" for label, f1 in worst]
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({Path(path).name})" for name, path in card["plots"].items()]
    lineage = card["lineage"]
    lines += [
        "",
        "## Lineage",
        "",
        f"- registered model `{card['name']}` version {reg['version']}, MLflow run `{reg['mlflow_run_id']}` at `{reg['tracking_uri']}`",
        f"- git commit of the project: `{lineage['git_commit'] or 'not a git repository'}`",
        f"- config hash `{lineage['config_hash'][:16]}`; adapter `{card['adapter_dir']}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in lineage["versions"].items()),
        "",
    ]
    return "\n".join(lines)
