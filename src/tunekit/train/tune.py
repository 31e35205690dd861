"""``tunekit tune``: hyperparameter search with Optuna on the frozen splits.

Each trial applies the sampled values to the config (the same dotted keys as ``--set``), trains,
and is scored by its best validation primary metric; the test split is never looked at, so the
final ``tunekit run`` on the best config still reports an honest test score. Trials report every
epoch, so the median pruner stops hopeless ones early. Every trial is an MLflow child run of one
parent run, and the study lives in Optuna storage (SQLite in the workspace by default; a database
URL lets several machines work on one study). The best trial's full config is written out.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from rich.console import Console

from tunekit import data as data_stage
from tunekit import registry, train
from tunekit.artifacts import Workspace
from tunekit.config import TunekitConfig, lower_is_better
from tunekit.errors import ConfigError

__all__ = ["tune"]


def tune(cfg: TunekitConfig, console: Console | None = None) -> dict:
    """Run the search; returns the best trial's number, score, parameters and config path."""
    import mlflow
    import optuna

    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = cfg.tune
    study_name = settings.study or f"{cfg.name}-tune"
    workspace = Workspace(cfg.workspace_dir)
    out_dir = workspace.tune / study_name
    out_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name, direction="minimize" if lower_is_better(cfg.eval.primary) else "maximize", load_if_exists=True,
        storage=settings.storage or f"sqlite:///{workspace.optuna_db}",
        sampler=_sampler(settings, cfg.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if settings.pruning else optuna.pruners.NopPruner(),
    )
    data = data_stage.prepare(cfg)
    mlc = registry.client(cfg.tracking, cfg.workspace_dir)
    experiment = registry.experiment_id(mlc, cfg.name, cfg.workspace_dir)
    with mlflow.start_run(experiment_id=experiment, run_name=f"tune {study_name}") as parent:
        mlflow.set_tags({"tunekit.kind": "tune", "tunekit.study": study_name, "tunekit.data_fingerprint": data.fingerprint})
        study.optimize(lambda trial: _objective(trial, cfg, data, out_dir, console), n_trials=settings.trials,
                       timeout=settings.minutes * 60 if settings.minutes else None, catch=())
        best = study.best_trial
        mlflow.log_metric(f"best_val_{cfg.eval.primary}", best.value)
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        best_path = _write_best(cfg, best.params, out_dir / "best.yaml")
        mlflow.log_artifact(str(best_path), "tune")
    summary = {"study": study_name, "best_trial": best.number, "best_value": best.value, "params": best.params,
               "config": str(best_path), "trials": len(study.trials), "mlflow_run_id": parent.info.run_id,
               "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)}
    console.print(f"Best trial {best.number}: validation {cfg.eval.primary} {best.value:.4f} with {best.params}")
    console.print(f"Best config: {best_path}  (train and register it: tunekit run {best_path})")
    return summary


def _sampler(settings, seed: int):
    import optuna

    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "grid":
        loose = [k for k, p in settings.space.items() if p.type != "categorical"]
        if loose:
            raise ConfigError(f"tune.sampler grid walks listed values only: give {loose} `type: categorical` with `choices`")
        return optuna.samplers.GridSampler({k: p.choices for k, p in settings.space.items()}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _suggest(trial, key: str, param):
    if param.type == "categorical":
        return trial.suggest_categorical(key, param.choices)
    if param.type == "int":
        return trial.suggest_int(key, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(key, param.low, param.high, log=param.log)


def _trial_config(cfg: TunekitConfig, values: dict) -> TunekitConfig:
    try:
        return cfg.derive(**values)
    except ConfigError as exc:
        raise ConfigError(f"tune.space: the sampled values make an invalid config; narrow the space. {exc}") from None


def _objective(trial, cfg: TunekitConfig, data, out_dir: Path, console: Console) -> float:
    import mlflow
    import optuna

    values = {key: _suggest(trial, key, param) for key, param in cfg.tune.space.items()}
    trial_cfg = _trial_config(cfg, values)
    console.rule(f"[bold]trial {trial.number}: {values}")

    def report(epoch: int, score: float) -> None:
        trial.report(score, epoch)
        mlflow.log_metric(f"val_{cfg.eval.primary}", score, step=epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation {cfg.eval.primary} {score:.4f} after epoch {epoch} is below the median")

    started = time.perf_counter()
    parent = mlflow.active_run().info.experiment_id  # nested runs do not inherit the experiment
    with mlflow.start_run(experiment_id=parent, run_name=f"trial {trial.number}", nested=True):
        mlflow.log_params(values)
        try:
            result = train.run(trial_cfg, data, out_dir / f"trial-{trial.number}" / "adapter", console, on_epoch=report)
        except optuna.TrialPruned:
            mlflow.set_tag("tunekit.trial_state", "pruned")
            raise
        mlflow.log_metrics({f"best_val_{cfg.eval.primary}": result.best_score, "seconds": time.perf_counter() - started})
        mlflow.set_tag("tunekit.trial_state", "complete")
    return result.best_score


def _write_best(cfg: TunekitConfig, params: dict, path: Path) -> Path:
    """The best trial's full config; data paths made absolute so it runs from anywhere."""
    raw = cfg.derive(**params).model_dump(mode="json", exclude={"tune"})
    for key in ("train", "validation", "test"):
        if raw["data"].get(key):
            raw["data"][key] = str(cfg.path(raw["data"][key]))
    if raw["eval"].get("suite"):
        raw["eval"]["suite"] = str(cfg.path(raw["eval"]["suite"]))
    raw["workspace"] = str(cfg.workspace_dir)
    path.write_text(f"# best trial of tunekit tune (validation {cfg.eval.primary}); generated\n" + yaml.safe_dump(raw, sort_keys=False))
    return path
