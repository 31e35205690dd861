"""Evaluate stage: score the fine-tuned model beside the baseline on the same frozen test rows.

Writes per-example predictions (so any number in the report can be recomputed), a confusion
matrix, per-class F1 against the baseline and the training curve.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunekit.evaluate import plots
from tunekit.evaluate.metrics import classification_metrics, headline

__all__ = ["EvalResult", "run", "score", "classification_metrics", "headline"]


@dataclass
class EvalResult:
    metrics: dict          # the fine-tuned model's metrics on test
    baseline: dict         # the baseline's metrics on the same rows
    probs: np.ndarray      # fine-tuned test probabilities
    files: dict[str, Path]


def score(model, data, batch_size: int = 64) -> tuple[dict, np.ndarray]:
    """Metrics and probabilities of a ``TrainedModel`` on ``data.test``."""
    pairs = list(data.test["text_pair"]) if "text_pair" in data.test.column_names else None
    probs = model.predict_proba(list(data.test["text"]), pairs, batch_size)
    return classification_metrics(np.asarray(list(data.test["label"])), probs.argmax(1), data.labels), probs


def run(cfg, data, model, baseline, out_dir: Path, history: list[dict]) -> EvalResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, probs = score(model, data, cfg.train.eval_batch_size)
    y_true = np.asarray(list(data.test["label"]))
    files = {
        "predictions": _write_predictions(out_dir / "predictions.csv", data, probs, baseline.probs),
        "confusion_matrix": plots.confusion(y_true, probs.argmax(1), data.labels, out_dir / "confusion_matrix.png",
                                            f"{cfg.name}: fine-tuned, test (row-normalised)"),
        "per_class_f1": plots.per_class_f1(metrics["per_class_f1"], baseline.metrics["per_class_f1"], out_dir / "per_class_f1.png"),
    }
    if history:
        files["training_curve"] = plots.training_curve(history, cfg.eval.primary, out_dir / "training_curve.png")
    return EvalResult(metrics=metrics, baseline=baseline.metrics, probs=probs, files=files)


def _write_predictions(path: Path, data, probs: np.ndarray, baseline_probs: np.ndarray) -> Path:
    labels = data.labels
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label", "predicted", "confidence", "baseline_predicted", "baseline_confidence"])
        for i, row in enumerate(data.test):
            p, b = int(probs[i].argmax()), int(baseline_probs[i].argmax())
            writer.writerow([row["id"], row["text"], labels[row["label"]], labels[p], f"{probs[i, p]:.4f}", labels[b], f"{baseline_probs[i, b]:.4f}"])
    return path
