"""Compare two runs on the same test rows: ``tunekit report RUN --compare RUN2``.

Both runs' per-example predictions are joined on the row id, so the comparison is paired: the
bootstrap resamples the same rows for both, and McNemar's test counts the rows where exactly one
of them is right. Runs tested on different rows (different test fingerprints) are refused: their
numbers cannot be compared. Regression runs (a ``target`` column in ``predictions.csv``) are
compared on MSE, RMSE, MAE and R², with no McNemar test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tunekit.errors import TunekitError
from tunekit.evaluate import stats
from tunekit.report.markdown import direction_note, p_value, verdict_word


def load_card(run_dir: Path) -> dict:
    path = run_dir / "report.json"
    if not path.is_file():
        raise TunekitError(f"{run_dir}: no report.json; is this a run folder (tunekit-workspace/runs/RUN_ID)?")
    return json.loads(path.read_text())


def compare(run_a: Path, run_b: Path, resamples: int = 1000) -> tuple[dict, str]:
    """(comparison dict, Markdown) of run B against run A."""
    a, b = load_card(run_a), load_card(run_b)
    if a["data"]["test_fingerprint"] != b["data"]["test_fingerprint"]:
        raise TunekitError(f"runs {a['run_id']} and {b['run_id']} were tested on different rows "
                           f"(test fingerprints {a['data']['test_fingerprint'][:12]} vs {b['data']['test_fingerprint'][:12]}); "
                           "their metrics cannot be compared. Re-run one of them on the other's data.")
    result = compare_predictions(run_a / "predictions.csv", run_b / "predictions.csv", resamples)
    result.update(a=a["run_id"], b=b["run_id"])
    return result, _markdown(result, a, b)


def compare_predictions(path_a: Path, path_b: Path, resamples: int = 1000) -> dict:
    """Paired statistics of B's predictions against A's, joined on the row id."""
    rows_a, rows_b = _read(path_a), _read(path_b)
    ids = [i for i in rows_a if i in rows_b]
    if ids and "target" in rows_a[ids[0]]:
        y = np.array([float(rows_a[i]["target"]) for i in ids])
        pa, pb = (np.array([float(rows[i]["predicted"]) for i in ids]) for rows in (rows_a, rows_b))
        return {"rows": len(ids), "metrics": stats.compare_regression(y, pa, pb, resamples), "mcnemar": None}
    labels = sorted({rows_a[i]["label"] for i in ids} | {rows_a[i]["predicted"] for i in ids} | {rows_b[i]["predicted"] for i in ids})
    index = {name: k for k, name in enumerate(labels)}
    y = np.array([index[rows_a[i]["label"]] for i in ids])
    pa = np.array([index[rows_a[i]["predicted"]] for i in ids])
    pb = np.array([index[rows_b[i]["predicted"]] for i in ids])
    return {"rows": len(ids), "metrics": stats.compare_metrics(y, pa, pb, labels, resamples), "mcnemar": stats.mcnemar(y, pa, pb)}


def _read(path: Path) -> dict[str, dict]:
    with path.open(encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def _markdown(result: dict, a: dict, b: dict) -> str:
    lines = [f"# {b['name']}: run {b['run_id']} against run {a['run_id']}", "",
             f"Same {result['rows']} test rows (test fingerprint `{a['data']['test_fingerprint'][:16]}`). "
             f"A: {a['method']} v{a['registry']['version']} ({a['registry']['alias']}); B: {b['method']} v{b['registry']['version']} ({b['registry']['alias']}).",
             "", "| metric | A | B | B - A | 95% interval | p |", "|---|---:|---:|---:|---:|---:|"]
    for metric, r in result["metrics"].items():
        lines.append(f"| {metric}{direction_note(r)} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f}{verdict_word(r)} | "
                     f"[{r['low']:+.4f}, {r['high']:+.4f}] | {p_value(r['p_value'])} |")
    m = result["mcnemar"]
    if m is None:
        return "\n".join(lines + [""])
    lines += ["", f"McNemar ({m['method']}): B right where A is wrong on {m['a_wrong_b_right']} rows, "
                  f"wrong where A is right on {m['a_right_b_wrong']}; p = {m['p_value']:.3g}.", ""]
    return "\n".join(lines)
