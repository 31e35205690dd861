"""Evaluate stage: score the fine-tuned model beside the baseline on the same frozen test rows,
with the statistics a sceptical reviewer asks for.

``run`` writes per-example predictions (so any number in the report can be recomputed) and
collects: paired bootstrap intervals and McNemar's test against the baseline, the rows the model
fixed and broke, slices where it is worse, calibration before and after temperature scaling
(fitted on validation, saved with the model, used by the server), one-vs-rest curves, flip rates
under perturbations, the user's behavioural suite, and word attributions for a few rows.
``task: regression`` is evaluated by ``evaluate.regression`` (error metrics, predicted-vs-true plot,
paired bootstrap of each error, slices) and skips what only applies to labels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunekit import task_kinds
from tunekit.data.prepare import text_pairs
from tunekit.evaluate import (
    calibration,
    curves,
    explain,
    plots,
    robustness,
    slices,
    stats,
)
from tunekit.evaluate.metrics import classification_metrics, headline
from tunekit.data.multitask import restrict_split, row_tasks

__all__ = ["EvalResult", "classification_metrics", "collapse", "headline", "run", "score"]


@dataclass
class EvalResult:
    metrics: dict          # the fine-tuned model's metrics on test
    baseline: dict         # the baseline's metrics on the same rows
    probs: np.ndarray | None  # fine-tuned test probabilities (None for regression)
    files: dict[str, Path]
    analysis: dict = field(default_factory=dict)  # statistics, slices, calibration, robustness, suite, explanations
    values: np.ndarray | None = None  # regression: fine-tuned test predictions


def score(model, data, batch_size: int = 64) -> tuple[dict, np.ndarray]:
    """Metrics and probabilities (regression: predicted values) of a ``TrainedModel`` on ``data.test``."""
    if task_kinds.kind(model.task).numeric:
        from tunekit.evaluate.regression import score as score_regression

        return score_regression(model, data, batch_size)
    probs = restrict_split(model.predict_proba(list(data.test["text"]), text_pairs(data.test), batch_size), data, data.test)
    return classification_metrics(np.asarray(list(data.test["label"])), probs.argmax(1), data.labels), probs


def run(cfg, data, model, baseline, out_dir: Path, history: list[dict], console=None) -> EvalResult:
    """Classification's evaluation (regression's is ``evaluate.regression.run_regression``, generation's
    ``evaluate.generation.run_generation``; the task row in ``tasks.py`` picks). Each step says when it
    is done and how long it took, so a log shows where the minutes go."""
    step = _stepper(console)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, probs = score(model, data, cfg.train.eval_batch_size)
    step(f"test predictions ({len(probs)} rows)")
    y, pred, base_pred = np.asarray(list(data.test["label"])), probs.argmax(1), baseline.probs.argmax(1)
    texts, labels = list(data.test["text"]), data.labels
    files = {
        "predictions": _write_predictions(out_dir / "predictions.csv", data, probs, baseline.probs),
        "confusion_matrix": plots.confusion(y, pred, labels, out_dir / "confusion_matrix.png", f"{cfg.name}: fine-tuned, test (row-normalised)"),
        "confusion_counts": curves.confusion_raw(y, pred, labels, out_dir / "confusion_counts.png"),
        "per_class_f1": plots.per_class_f1(metrics["per_class_f1"], baseline.metrics["per_class_f1"], out_dir / "per_class_f1.png"),
        "roc_pr": curves.roc_pr_plot(probs, y, labels, out_dir / "roc_pr.png"),
    }
    if history:
        files["training_curve"] = plots.training_curve(history, cfg.eval.primary, out_dir / "training_curve.png")
    analysis = {
        "versus_baseline": stats.compare_metrics(y, base_pred, pred, labels, cfg.eval.bootstrap_resamples, seed=cfg.train.seed),
        "mcnemar": stats.mcnemar(y, base_pred, pred),
        "diff": stats.example_diff(list(data.test["id"]), texts, y, base_pred, pred, labels, max_examples=5, seed=cfg.train.seed),
        "curves": curves.one_vs_rest(probs, y, labels),
        "slices": slices.slice_table(_slice_groups(cfg, data, texts), y, pred, base_pred, labels, cfg.eval.primary),
    }
    if data.multitask:
        analysis["tasks"] = _per_task(cfg, data, y, base_pred, pred)
    collapsed = collapse(pred, labels)
    if collapsed:
        analysis["collapsed"] = collapsed
    step("statistics, slices and plots")
    if cfg.eval.calibrate:
        analysis["calibration"] = _calibrate(cfg, data, model, probs, y, out_dir / "reliability.png", collapsed is not None)
        files["reliability"] = out_dir / "reliability.png"
        step("calibration on validation")
    if cfg.eval.robustness_sample and "text_pair" not in data.test.column_names:
        analysis["robustness"] = robustness.flip_rates(_predict_ids(model, cfg), texts, seed=cfg.train.seed, sample=cfg.eval.robustness_sample)
        step(f"robustness ({min(cfg.eval.robustness_sample, len(texts))} rows, 5 edits each)")
    if cfg.eval.suite:
        from tunekit.evaluate import suite

        cases = suite.load_suite(cfg.path(cfg.eval.suite), labels)
        analysis["suite"] = suite.run_suite(cases, lambda batch: [labels[i] for i in _predict_ids(model, cfg)(batch)])
        step("behavioural suite")
    if cfg.eval.explain_samples and "text_pair" not in data.test.column_names:
        rng = np.random.default_rng(cfg.train.seed)
        picks = rng.choice(len(texts), size=min(cfg.eval.explain_samples, len(texts)), replace=False)
        analysis["explanations"] = [explain.occlusion(lambda b: model.predict_proba(b), texts[i], labels) for i in sorted(picks)]
        step(f"word attributions ({len(picks)} rows)")
    return EvalResult(metrics=metrics, baseline=baseline.metrics, probs=probs, files=files, analysis=analysis)


def _stepper(console):
    """A function printing ``evaluate: WHAT done in S s`` (time since the previous step) on ``console``."""
    import time

    last = [time.perf_counter()]

    def step(what: str) -> None:
        now = time.perf_counter()
        if console is not None:
            console.print(f"evaluate: {what} done in {now - last[0]:.1f} s", markup=False, highlight=False)
        last[0] = now

    return step


def _per_task(cfg, data, y: np.ndarray, base_pred: np.ndarray, pred: np.ndarray) -> dict:
    """Each task's primary metric against the baseline on that task's rows, with a paired bootstrap
    interval: a multi-task model is promoted only if every task beats its baseline (the gate)."""
    tasks = np.asarray(row_tasks(y, data.labels))
    out = {}
    for task in dict.fromkeys(tasks.tolist()):
        idx = np.flatnonzero(tasks == task)
        r = stats.compare_metrics(y[idx], base_pred[idx], pred[idx], data.labels, cfg.eval.bootstrap_resamples, seed=cfg.train.seed)
        out[task] = {"rows": int(len(idx)), **r[cfg.eval.primary]}
    return out


def _slice_groups(cfg, data, texts: list[str]) -> dict[str, list[str]]:
    """Slice name per test row for each slicing: text length, label, and each metadata column."""
    from tunekit.data.validate import META_PREFIX

    groups = {"length": slices.length_buckets(texts, cfg.eval.length_buckets),
              "label": [data.labels[i] for i in data.test["label"]]}
    if data.multitask:  # each task against the baseline on its own rows
        groups["task"] = row_tasks(data.test["label"], data.labels)
    groups.update({column: list(data.test[META_PREFIX + column]) for column in cfg.eval.slice_columns})
    return groups


def _predict_ids(model, cfg):
    return lambda batch: model.predict_proba(batch, None, cfg.train.eval_batch_size).argmax(1).tolist()


def collapse(pred: np.ndarray, labels: list[str]) -> dict | None:
    """The one label a classifier predicts for every test row, when it does (a model that learnt
    nothing but the majority class; an entailment set once did this). None when it predicts several."""
    seen = np.unique(pred)
    if len(labels) < 2 or len(seen) != 1:
        return None
    return {"label": labels[int(seen[0])], "rows": int(len(pred)), "labels": len(labels)}


def _calibrate(cfg, data, model, test_probs: np.ndarray, y: np.ndarray, path: Path, collapsed: bool = False) -> dict:
    """Fit one temperature on validation; report test ECE before and after. Log-probabilities
    stand in for logits: they differ by a per-row constant, which softmax ignores."""
    val_probs = model.predict_proba(list(data.validation["text"]), text_pairs(data.validation), cfg.train.eval_batch_size)
    val_probs = restrict_split(val_probs, data, data.validation)
    val_logp, y_val = np.log(np.clip(val_probs, 1e-12, None)), np.asarray(list(data.validation["label"]))
    fitted = calibration.fit_temperature(val_logp, y_val)
    check = calibration.temperature_helps(val_logp, y_val, seed=cfg.train.seed)
    if collapsed:  # one class for every row: a temperature only rescales a useless answer
        check = {**check, "helps": False, "warning": "not applied: the model predicts one class for every row"}
    temperature = fitted if check["helps"] else 1.0  # a temperature that does not help on held-out rows is not applied
    after = calibration.apply_temperature(np.log(np.clip(test_probs, 1e-12, None)), fitted)
    before_bins, after_bins = calibration.reliability_bins(test_probs, y), calibration.reliability_bins(after, y)
    calibration.reliability_diagram(before_bins, after_bins, path, f"{cfg.name}: reliability on test (T = {fitted:.2f})")
    model.info.temperature = temperature
    return {"temperature": temperature, "fitted_temperature": fitted, "applied": check["helps"], **check,
            "ece_before": calibration.ece_from_bins(before_bins), "ece_after": calibration.ece_from_bins(after_bins)}


def _write_predictions(path: Path, data, probs: np.ndarray, baseline_probs: np.ndarray) -> Path:
    """One row per test row; sentence pairs keep both texts (``text_pair`` after ``text``)."""
    labels, pair = data.labels, "text_pair" in data.test.column_names
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", *(["text_pair"] if pair else []), "label", "predicted", "confidence", "baseline_predicted",
                         "baseline_confidence"])
        for i, row in enumerate(data.test):
            p, b = int(probs[i].argmax()), int(baseline_probs[i].argmax())
            writer.writerow([row["id"], row["text"], *([row["text_pair"]] if pair else []), labels[row["label"]], labels[p],
                             f"{probs[i, p]:.4f}", labels[b], f"{baseline_probs[i, b]:.4f}"])
    return path
