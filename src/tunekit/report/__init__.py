"""Report stage: the report card of a run (built from every stage's results) and its two renderings,
the files (``markdown``: Markdown, JSON and self-contained HTML) and the console summary (``console``).

``build`` assembles the card every task shares; the task row adds its own sections (``tasks.py``).
"""

from __future__ import annotations

from pathlib import Path

from tunekit.artifacts import package_versions
from tunekit.report.markdown import restamp, write

__all__ = ["build", "restamp", "write"]


def build(cfg, run_id: str, run_dir: Path, base, trained, result, decision, version: str, mlflow_run: str, tags: dict) -> dict:
    """The card of one run: what was trained on what, the baseline to beat, the model's metrics and
    analysis, training, the registry's decision and the lineage. ``data`` is the task's to fill."""
    return {
        "name": cfg.name, "task": cfg.task, "run_id": run_id, "primary": cfg.eval.primary, "method": cfg.method.kind,
        "base_model": cfg.model.base, "adapter_dir": str(run_dir / "adapter"),
        "data": {},
        "baseline": {"name": base.name, "metrics": base.metrics, "seconds": base.seconds},
        "model": {"metrics": result.metrics},
        "analysis": result.analysis,
        "train": {"history": trained.history, "best_epoch": trained.best_epoch, "best_score": trained.best_score,
                  "stopped_early": trained.stopped_early, "trainable_params": trained.trainable_params,
                  "total_params": trained.total_params, "seconds": trained.seconds,
                  "train_examples_per_second": trained.train_examples_per_second, "peak_memory_mb": trained.peak_memory_mb},
        "registry": {"version": version, "alias": decision.alias, "passed": decision.passed, "reason": "; ".join(decision.reasons),
                     "champion": vars(decision.champion) if decision.champion else None,
                     "mlflow_run_id": mlflow_run, "tracking_uri": cfg.tracking},
        "plots": {k: str(v) for k, v in result.files.items() if v.suffix == ".png"},
        "lineage": {"git_commit": tags["tunekit.git_commit"], "config_hash": tags["tunekit.config_hash"],
                    "versions": package_versions()},
    }
