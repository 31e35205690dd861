"""Evaluate a ``task: regression`` model beside its TF-IDF + ridge baseline on the same test rows.

The numbers: MSE, RMSE and MAE (in the target's units, lower is better) and R² (the share of the
target's variance explained, higher is better), each with a paired bootstrap interval of the
difference to the baseline. The pictures: predicted against true for both models around the
y = x line, and the residuals' histogram. The slices: text length, quartile of the true target
and each metadata column, flagged where the model is worse than the baseline.

What does not apply to a number and is not computed: temperature calibration, McNemar's test
(right/wrong counts), ROC/PR curves, prediction flips under edits, the behavioural suite and
label-noise candidates. ``NOT_APPLICABLE`` names them for the report card.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tunekit.data.prepare import text_pairs
from tunekit.evaluate import explain, plots, slices, stats
from tunekit.evaluate.metrics import regression_metrics

NOT_APPLICABLE = ("calibration", "McNemar's test", "ROC/PR curves", "robustness flips", "behavioural suite",
                  "label-noise candidates")


def targets(ds) -> np.ndarray:
    return np.asarray(list(ds["label"]), dtype=float)


def score(model, data, batch_size: int = 64) -> tuple[dict, np.ndarray]:
    """Metrics and predicted values of a regression ``TrainedModel`` on ``data.test``."""
    values = model.predict(list(data.test["text"]), text_pairs(data.test), batch_size)
    return regression_metrics(targets(data.test), values), values


def run_regression(cfg, data, model, baseline, out_dir: Path, history: list[dict]):
    """Metrics, per-example predictions, plots and paired statistics of ``model`` against ``baseline``."""
    from tunekit.evaluate import EvalResult

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, values = score(model, data, cfg.train.eval_batch_size)
    y, base_values, texts = targets(data.test), baseline.values, list(data.test["text"])
    files = {
        "predictions": write_predictions(out_dir / "predictions.csv", data, values, base_values),
        "predicted_vs_true": plots.predicted_vs_true(y, values, base_values, out_dir / "predicted_vs_true.png",
                                                     f"{cfg.name}: predicted vs true, test"),
        "residuals": plots.residuals(y, values, base_values, out_dir / "residuals.png"),
    }
    if history:
        files["training_curve"] = plots.training_curve(history, cfg.eval.primary, out_dir / "training_curve.png")
    analysis = {
        "versus_baseline": stats.compare_regression(y, base_values, values, cfg.eval.bootstrap_resamples, seed=cfg.train.seed),
        "slices": slices.regression_slice_table(_slice_groups(cfg, data, texts, y), y, values, base_values, cfg.eval.primary),
        "not_applicable": list(NOT_APPLICABLE),
    }
    if cfg.eval.explain_samples and "text_pair" not in data.test.column_names:
        rng = np.random.default_rng(cfg.train.seed)
        picks = rng.choice(len(texts), size=min(cfg.eval.explain_samples, len(texts)), replace=False)
        analysis["explanations"] = [explain.occlusion_value(lambda batch: model.predict(batch, None, cfg.train.eval_batch_size), texts[i])
                                    for i in sorted(picks)]
    return EvalResult(metrics=metrics, baseline=baseline.metrics, probs=None, files=files, analysis=analysis, values=values)


def _slice_groups(cfg, data, texts: list[str], y: np.ndarray) -> dict[str, list[str]]:
    """Slice name per test row: text length, quartile of the true target, and each metadata column."""
    from tunekit.data.validate import META_PREFIX

    groups = {"length": slices.length_buckets(texts, cfg.eval.length_buckets), "target": slices.target_buckets(y)}
    groups.update({column: list(data.test[META_PREFIX + column]) for column in cfg.eval.slice_columns})
    return groups


def write_predictions(path: Path, data, values: np.ndarray, baseline_values: np.ndarray) -> Path:
    """One row per test row: the true target, both predictions and both errors (predicted - true)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "target", "predicted", "error", "baseline_predicted", "baseline_error"])
        for i, row in enumerate(data.test):
            t = float(row["label"])
            p, b = float(values[i]), float(baseline_values[i])
            writer.writerow([row["id"], row["text"], repr(t), repr(p), f"{p - t:.6g}", repr(b), f"{b - t:.6g}"])
    return path
