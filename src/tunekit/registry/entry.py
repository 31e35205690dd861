"""The registry entry of a run: the champion's score on the run's test rows, the gate's decision,
the MLflow run and version, and the alias the decision gives it (``gate_and_register``).

The champion is compared on the very rows the candidate was tested on: its recorded score when it
was tested on the same test split (same fingerprint), else re-scored now by the task (``rescore``),
else there is nothing to beat (another task or label set).
"""

from __future__ import annotations

from pathlib import Path

from tunekit.artifacts import git_commit, package_versions
from tunekit.config import TunekitConfig
from tunekit.registry import ChampionScore, GateDecision, champion_version, decide, log_run, register, resolve, set_alias

__all__ = ["champion_score", "flatten", "gate_and_register", "run_tags"]


def gate_and_register(mlc, cfg: TunekitConfig, data, run_dir: Path, trained, *, test: dict[str, float], baseline: dict[str, float],
                      analysis: dict, files: list[Path], champion: ChampionScore | None, tags: dict,
                      metrics: dict) -> tuple[str, str, GateDecision]:
    """Decide (primary metric against the baseline, the champion, the suite and each task), log the
    MLflow run, register the version and give it the alias the decision says. ``test`` and
    ``baseline``: the headline test metrics of the model and the best baseline; ``analysis``: the
    evaluation's (suite, per-task results, ``gate.graders``' pass rates); ``files``: the evaluation's files to keep with the run;
    ``metrics``: the task's own figures to log beside them (its training speed)."""
    decision = decide(cfg.eval.primary, test[cfg.eval.primary], baseline[cfg.eval.primary], cfg.gate.min_improvement, champion,
                      cfg.gate.beat_champion, analysis.get("suite") if cfg.gate.require_suite else None, analysis.get("tasks"), analysis.get("gate_graders"))
    version, mlflow_run = _register(mlc, cfg, run_dir, data, trained, test, baseline, files, tags, metrics)
    set_alias(mlc, cfg.name, version, decision, live=cfg.gate.live)
    return version, mlflow_run, decision


def champion_score(mlc, cfg: TunekitConfig, data, rescore) -> ChampionScore | None:
    """The current champion's primary metric on this run's test rows: the recorded one when it was
    tested on the same rows, else measured now by ``rescore(path)`` (None when its task or labels differ),
    else not comparable."""
    mv, recorded = _recorded_champion(mlc, cfg, data)
    if mv is None or recorded is not None:
        return recorded
    resolved = resolve(f"{cfg.name}/{mv.version}", cfg.tracking)
    metrics = rescore(Path(resolved.path))
    if metrics is None:
        return None  # a different task or label set: decide() says there is no champion to beat
    return ChampionScore(str(mv.version), metrics[cfg.eval.primary], "re-evaluated")


def _recorded_champion(mlc, cfg: TunekitConfig, data):
    """(champion version or None, its recorded score when it was tested on these very test rows, else None)."""
    mv = champion_version(mlc, cfg.name)
    if mv is None:
        return None, None
    tags = mv.tags or {}
    recorded = tags.get(f"test_{cfg.eval.primary}")
    if tags.get("test_fingerprint") == data.test_fingerprint and recorded is not None:
        return mv, ChampionScore(str(mv.version), float(recorded), "recorded")
    return mv, None


def _register(mlc, cfg: TunekitConfig, run_dir: Path, data, trained, test: dict, baseline: dict, files: list[Path], tags: dict,
              metrics: dict) -> tuple[str, str]:
    """One MLflow run (params, metrics, history, artifacts) and a registered version tagged with what
    the gate and later runs compare: fingerprints and the primary metric of model and baseline."""
    mlflow_run = log_run(
        mlc, cfg.name, cfg.workspace_dir, params=flatten(cfg.model_dump(mode="json")),
        metrics={**{f"test_{k}": v for k, v in test.items()}, **{f"baseline_{k}": v for k, v in baseline.items()},
                 "trainable_params": trained.trainable_params, "train_seconds": trained.seconds, "best_epoch": trained.best_epoch, **metrics},
        tags=tags, history=trained.history,
        artifacts=[("adapter", run_dir / "adapter"), ("data", data.directory / "report.md"), ("data", data.directory / "report.json"),
                   *(("evaluation", p) for p in files)],
    )
    version = register(mlc, cfg.name, mlflow_run, {
        "test_fingerprint": data.test_fingerprint, "data_fingerprint": data.fingerprint, "task": cfg.task,
        "primary_metric": cfg.eval.primary, f"test_{cfg.eval.primary}": test[cfg.eval.primary],
        f"baseline_{cfg.eval.primary}": baseline[cfg.eval.primary], "method": cfg.method.kind, "run_dir": str(run_dir),
    })
    return version, mlflow_run


def run_tags(cfg: TunekitConfig, data, run_id: str) -> dict:
    versions = package_versions()
    return {
        "tunekit.run_name": run_id,
        "tunekit.git_commit": git_commit(cfg.path(".")),
        "tunekit.data_fingerprint": data.fingerprint,
        "tunekit.test_fingerprint": data.test_fingerprint,
        "tunekit.config_hash": cfg.hash(),
        "tunekit.base_model": cfg.model.base,
        "tunekit.method": cfg.method.kind,
        **{f"tunekit.version.{k}": v for k, v in versions.items()},
    }


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
