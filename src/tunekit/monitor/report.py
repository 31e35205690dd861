"""The monitor report: ``monitor.json`` for machines, ``monitor.md`` and a self-contained ``monitor.html``
(plots embedded, like the report card) for people."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cron and CI have no display
import matplotlib.pyplot as plt
import numpy as np

REF, PROD = "#bbbbbb", "#1f77b4"


def write(report: dict, ref: dict, plot: dict, out_dir: Path) -> dict[str, Path]:
    """Write the plots, ``monitor.json``, ``monitor.md`` and ``monitor.html`` into ``out_dir``."""
    from tunekit.evaluate import html

    out_dir.mkdir(parents=True, exist_ok=True)
    files = _plots(ref, plot, report, out_dir)
    report["plots"] = {k: v.name for k, v in files.items()}
    text = render_markdown(report)
    (out_dir / "monitor.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "monitor.md").write_text(text)
    (out_dir / "monitor.html").write_text(html.render(text, out_dir, f"{report['model']['name']} monitor"))
    return {"json": out_dir / "monitor.json", "markdown": out_dir / "monitor.md", "html": out_dir / "monitor.html", **files}


def render_markdown(r: dict) -> str:
    m, t, w = r["model"], r["traffic"], r["window"]
    version = f" version {m['version']}" if m["version"] else ""
    lines = [f"# Monitor: {m['name']}{version}: {r['status'].upper()}", "",
             (f"**Window** last {w['since']} ({w['from']} to {w['to']}): {t['requests']} requests, {t['inputs']} inputs "
             f"(a drift verdict needs at least {t['min_requests']})."), "",
             (f"**Reference** built {r['reference']['created_at']} from {r['reference']['rows']['train']} training rows "
             f"(data fingerprint `{str(r['reference']['data_fingerprint'])[:16]}`), stored in `{m['dir']}`."), "", "## Alerts", ""]
    lines += [f"- {a}" for a in r["alerts"]] or ["None."]
    lines += ["", "## Drift checks", ""]
    if not r["checks"]:
        lines.append(f"Not enough traffic: {t['inputs']} inputs in the window, fewer than {t['min_requests']}; no drift verdict.")
    else:
        lines += ["| check | test | statistic | p-value | production | reference | threshold | drifted |", "|---|---|---|---|---|---|---|---|"]
        lines += [_row(c) for c in r["checks"]]
    lines += ["", "## Live quality (feedback)", ""] + _live(r["live"])
    from tunekit.monitor.online import lines as online_lines

    online = online_lines(r.get("online") or {})
    if online:
        lines += ["", "## Champion and challenger, slices, decision", "", "```"] + online + ["```"]
    if r.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in r["plots"].items()]
    return "\n".join(lines) + "\n"


def _row(c: dict) -> str:
    prod, ref = _sides(c)
    p = "" if c.get("p_value") is None else f"{c['p_value']:.3g}"
    stat = "" if c.get("statistic") is None else f"{c['statistic']:.4g}"
    if "psi" in c:
        stat += f" (PSI {c['psi']:.3f})"
    return f"| {c['title']} | {c['test']} | {stat} | {p} | {prod} | {ref} | {c['threshold']} | {'**yes**' if c['drifted'] else 'no'} |"


def _sides(c: dict) -> tuple[str, str]:
    if "production_mean" in c:
        return f"mean {c['production_mean']:.3g}", f"mean {c['reference_mean']:.3g}"
    if "production_rate" in c:
        return f"{c['production_rate']:.2%}", f"{c['reference_rate']:.2%} ({c['reference_source']})"
    if "production_share" in c:
        return f"JS distance {c['js_distance']:.3f}", f"{len(c['reference_share'])} labels"
    if c["name"] == "embedding":
        return f"{c['n_production']} texts", f"{c['n_reference']} texts"
    return "", ""


def _live(live: dict) -> list[str]:
    lines = []
    q = live.get("labelled") or {}
    if q.get("n"):
        if "accuracy" in q:
            lines.append(f"- accuracy {q['accuracy']:.3f} (95% interval {q['accuracy_low']:.3f}-{q['accuracy_high']:.3f}, Wilson), "
                         f"macro F1 {q['macro_f1']:.3f} ({q['macro_f1_low']:.3f}-{q['macro_f1_high']:.3f}, bootstrap) "
                         f"on {q['n']} feedback-labelled requests ({q['correct']} correct)")
        else:
            lines.append(f"- RMSE {q['rmse']:.4g} ({q['rmse_low']:.4g}-{q['rmse_high']:.4g}), MAE {q['mae']:.4g} "
                         f"({q['mae_low']:.4g}-{q['mae_high']:.4g}) on {q['n']} feedback values (95% bootstrap intervals)")
    else:
        lines.append("- no feedback with a label in the window")
    if live.get("skipped"):
        lines.append(f"- {live['skipped']} labelled feedback rows skipped: their request had several inputs (or the value was not a number)")
    r = live.get("ratings") or {}
    if r.get("n"):
        lines.append(f"- ratings: {r['n']}, mean {r['mean']:.2f}, {r['positive_share']:.1%} positive "
                     f"(95% interval {r['positive_low']:.1%}-{r['positive_high']:.1%})")
    return lines


def _plots(ref: dict, plot: dict, report: dict, out: Path) -> dict[str, Path]:
    files = {}
    if plot.get("length_words"):
        files["length"] = _overlay(ref["length"]["words"], plot["length_words"], "text length (words)", out / "length.png", integer=True)
    if plot.get("confidence"):
        files["confidence"] = _overlay(ref["predictions"]["confidence"], plot["confidence"], "confidence (max probability)",
                                       out / "confidence.png", bins=np.linspace(0, 1, 21))
    if plot.get("values"):
        files["predicted_values"] = _overlay(ref["predictions"]["values"], plot["values"], "predicted value", out / "predicted_values.png")
    if "labels" in plot:
        files["labels"] = _label_bars(ref["predictions"]["labels"], plot["labels"], out / "labels.png")
    if (plot.get("domain_scores") or {}).get("production"):
        check = next(c for c in report["checks"] if c["name"] == "embedding")
        files["embedding"] = _domain_scores(plot["domain_scores"], check, out / "embedding.png")
    return files


def _overlay(ref, cur, what: str, path: Path, bins=None, integer: bool = False) -> Path:
    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    if bins is None:
        hi = float(np.quantile(np.r_[ref, cur], 0.99)) if len(ref) + len(cur) else 1.0
        lo = float(min(ref.min(initial=0), cur.min(initial=0)))
        bins = np.arange(lo, hi + 2) - 0.5 if integer and hi - lo < 80 else np.linspace(lo, max(hi, lo + 1e-9), 31)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.hist(ref, bins=bins, density=True, alpha=0.6, color=REF, label=f"reference ({len(ref)})")
    ax.hist(cur, bins=bins, density=True, alpha=0.6, color=PROD, label=f"production ({len(cur)})")
    ax.set_xlabel(what)
    ax.set_ylabel("density")
    ax.legend()
    return _save(fig, path)


def _label_bars(ref_counts: dict[str, int], cur_counts: dict[str, int], path: Path) -> Path:
    names = sorted(set(ref_counts) | set(cur_counts), key=lambda k: -ref_counts.get(k, 0))
    r = np.array([ref_counts.get(n, 0) for n in names], dtype=float)
    c = np.array([cur_counts.get(n, 0) for n in names], dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(names) + 2), 3.8))
    x = np.arange(len(names))
    ax.bar(x - 0.2, r / max(r.sum(), 1), width=0.4, color=REF, label="reference (validation predictions)")
    ax.bar(x + 0.2, c / max(c.sum(), 1), width=0.4, color=PROD, label="production predictions")
    ax.set_xticks(x, names, rotation=90 if len(names) > 8 else 0, fontsize=max(5, 10 - len(names) // 10))
    ax.set_ylabel("share")
    ax.legend()
    return _save(fig, path)


def _domain_scores(scores: dict, check: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    bins = np.linspace(0, 1, 26)
    ax.hist(scores["reference"], bins=bins, density=True, alpha=0.6, color=REF, label="reference texts")
    ax.hist(scores["production"], bins=bins, density=True, alpha=0.6, color=PROD, label="production texts")
    ax.set_xlabel("domain classifier: P(production), out of fold")
    ax.set_ylabel("density")
    ax.set_title(f"embedding drift: AUC {check['auc']:.3f} (alert at {check['threshold'].split()[-1]})")
    ax.legend()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
