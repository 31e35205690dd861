"""The whole lifecycle on one screen: data, baseline, train, evaluate, register + gate, report.

``run`` is what ``tunekit run CONFIG`` does, for every task. Each step calls one stage's entry
function, or the task row's function where tasks differ (``tasks.py``: the prompted base model is
generation's baseline, TF-IDF classification's). The order matters only where a later stage reads
an earlier one's output: the baseline and the model are scored on the frozen test split the data
step made, the gate needs the champion's score on those rows, the card needs the MLflow version.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console

from tunekit import baseline, registry, report, tasks, train
from tunekit.config import TunekitConfig
from tunekit.evaluate.metrics import headline
from tunekit.artifacts import Manifest, Workspace, git_commit, package_versions
from tunekit.report import console as summary
from tunekit.train import distributed

__all__ = ["RunOutcome", "run"]


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    version: str
    decision: registry.GateDecision
    card: dict


def run(cfg: TunekitConfig, console: Console | None = None, resume: str | None = None) -> RunOutcome | None:
    """The lifecycle; ``resume`` is the id of an interrupted run whose training continues from its checkpoint.
    In a data-parallel run only rank 0 returns the outcome; the other ranks return None after training."""
    console = console or Console()
    task = tasks.get(cfg.task)
    run_id = resume or datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    run_dir = Workspace(cfg.workspace_dir).run(run_id)
    if resume:
        check_resumable(cfg, run_dir)  # before the data check and baseline: a refusal costs a second, not minutes
    elif distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_CONFIG).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))

    console.print(cfg.paths_note(), markup=False, highlight=False)
    console.rule("[bold]1/5 data")
    data = task.prepare(cfg, console)

    console.rule("[bold]2/5 baseline")
    baselines = task.baselines(cfg, data, console)
    for b in baselines:
        console.print(f"{b.name}: test " + ", ".join(f"{k} {b.metrics[k]:.4f}" for k in task.shown(cfg)) + f" ({b.seconds:.1f} s)")
    base = baseline.best(baselines, cfg.eval.primary)

    console.rule(f"[bold]3/5 train ({cfg.method.kind} on {cfg.model.base})")
    trained = train.run(cfg, data, run_dir / "adapter", console, resume=resume is not None)
    if not distributed.is_main():
        return None  # ranks other than 0 only helped train; rank 0 evaluates, registers and reports

    console.rule("[bold]4/5 evaluate")
    model = task.load(run_dir / "adapter", cfg)  # score exactly what was saved, as the server will load it
    result = task.evaluate(cfg, data, model, baselines, run_dir, trained.history, console)
    Manifest.update(run_dir / "adapter", metrics=headline(result.metrics), baseline_metrics=headline(base.metrics), **task.manifest(model))
    task.reference(cfg, data, model, run_dir / "adapter")  # drift reference; travels with the adapter to MLflow and the server

    console.rule("[bold]5/5 register")
    mlc = registry.client(cfg.tracking, cfg.workspace_dir)
    tags = _tags(cfg, data, run_id)
    version, mlflow_run, decision = _gate_and_register(mlc, cfg, task, data, base, result, trained, run_dir, tags, console)

    card = report.build(cfg, run_id, run_dir, base, trained, result, decision, version, mlflow_run, tags)
    task.card(card, data, baselines, model, trained)
    for path in report.write(card, run_dir):
        mlc.log_artifact(mlflow_run, str(path), "report")
    summary.print_summary(console, card, task.evidence(card), run_dir / "report.html", cfg.tracking == registry.default_tracking_uri())
    return RunOutcome(run_id, run_dir, version, decision, card)


def _gate_and_register(mlc, cfg: TunekitConfig, task: tasks.Task, data, base, result, trained, run_dir: Path, tags: dict,
                       console: Console) -> tuple[str, str, registry.GateDecision]:
    """The registry entry: the champion's score on these rows, the gate's decision, the MLflow run and
    version, and the alias the decision gives it."""
    champion = champion_score(mlc, cfg, task, data, console)
    if champion is not None and champion.how == "recorded":
        result.analysis["versus_champion"] = _versus_champion(mlc, cfg, champion, run_dir)
    decision = registry.decide(cfg.eval.primary, result.metrics[cfg.eval.primary], base.metrics[cfg.eval.primary],
                               cfg.gate.min_improvement, champion, cfg.gate.beat_champion,
                               result.analysis.get("suite") if cfg.gate.require_suite else None, result.analysis.get("tasks"))
    version, mlflow_run = _register(mlc, cfg, run_dir, data, base, result, trained, tags, {task.speed: getattr(trained, task.speed)},
                                    {"task": cfg.task})
    registry.set_alias(mlc, cfg.name, version, decision)
    return version, mlflow_run, decision


RUN_CONFIG = "config.json"  # the resolved config a run started with; --resume compares against it


def check_resumable(cfg: TunekitConfig, run_dir: Path) -> None:
    """Refuse ``--resume`` at once when the run folder is missing or the config differs from the one
    the run started with, naming each changed setting and how to continue."""
    from tunekit.errors import ConfigError

    if not run_dir.is_dir():
        runs = sorted(p.name for p in run_dir.parent.glob("*")) if run_dir.parent.is_dir() else []
        raise ConfigError(f"--resume {run_dir.name}: no such run in {run_dir.parent} (runs there: {', '.join(runs[-5:]) or 'none'})")
    saved = run_dir / RUN_CONFIG
    if not saved.is_file():
        return  # a run from before the config was recorded: training's own checkpoint check still guards it
    before, now = _flatten(json.loads(saved.read_text())), _flatten(cfg.model_dump(mode="json"))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        said = "; ".join(f"{k}: {before.get(k)!r} when the run started, {now.get(k)!r} now" for k in changed)
        sets = " ".join(f"--set {k}={json.dumps(before.get(k))}" for k in changed if k in before)
        raise ConfigError(f"--resume {run_dir.name}: the config differs from the one the run started with ({said}). A resumed run must "
                          f"train exactly as it began: resume with the original values ({sets}), or start a new run without --resume")


def _register(mlc, cfg: TunekitConfig, run_dir: Path, data, base, result, trained, tags: dict, metrics: dict,
              version_tags: dict) -> tuple[str, str]:
    """One MLflow run (params, metrics, history, artifacts) and a registered version tagged with what
    the gate and later runs compare: fingerprints and the primary metric of model and baseline."""
    mlflow_run = registry.log_run(
        mlc, cfg.name, cfg.workspace_dir, params=_flatten(cfg.model_dump(mode="json")),
        metrics={**{f"test_{k}": v for k, v in headline(result.metrics).items()},
                 **{f"baseline_{k}": v for k, v in headline(base.metrics).items()},
                 "trainable_params": trained.trainable_params, "train_seconds": trained.seconds, "best_epoch": trained.best_epoch, **metrics},
        tags=tags, history=trained.history,
        artifacts=[("adapter", run_dir / "adapter"), ("data", data.directory / "report.md"), ("data", data.directory / "report.json"),
                   *(("evaluation", p) for p in result.files.values())],
    )
    version = registry.register(mlc, cfg.name, mlflow_run, {
        "test_fingerprint": data.test_fingerprint, "data_fingerprint": data.fingerprint, **version_tags,
        "primary_metric": cfg.eval.primary, f"test_{cfg.eval.primary}": result.metrics[cfg.eval.primary],
        f"baseline_{cfg.eval.primary}": base.metrics[cfg.eval.primary], "method": cfg.method.kind, "run_dir": str(run_dir),
    })
    return version, mlflow_run


def _recorded_champion(mlc, cfg: TunekitConfig, data):
    """(champion version or None, its recorded score when it was tested on these very test rows, else None)."""
    mv = registry.champion_version(mlc, cfg.name)
    if mv is None:
        return None, None
    tags = mv.tags or {}
    recorded = tags.get(f"test_{cfg.eval.primary}")
    if tags.get("test_fingerprint") == data.test_fingerprint and recorded is not None:
        return mv, registry.ChampionScore(str(mv.version), float(recorded), "recorded")
    return mv, None


def champion_score(mlc, cfg: TunekitConfig, task: tasks.Task, data, console: Console | None = None) -> registry.ChampionScore | None:
    """The current champion's primary metric on this run's test rows: the recorded one when it was
    tested on the same rows, else measured now (when its task and labels match), else not comparable."""
    mv, recorded = _recorded_champion(mlc, cfg, data)
    if mv is None or recorded is not None:
        return recorded
    resolved = registry.resolve(f"{cfg.name}/{mv.version}", cfg.tracking)
    metrics = task.rescore(cfg, data, Path(resolved.path), console or Console(quiet=True))
    if metrics is None:
        return None  # a different task or label set: decide() says there is no champion to beat
    return registry.ChampionScore(str(mv.version), metrics[cfg.eval.primary], "re-evaluated")


def _versus_champion(mlc, cfg: TunekitConfig, champion: registry.ChampionScore, run_dir: Path) -> dict | None:
    """Paired statistics against the champion's own predictions on the same rows, when its run
    folder is on this machine (its path is a tag of the version)."""
    from tunekit.report.compare import compare_predictions

    champ_dir = Path((mlc.get_model_version(cfg.name, champion.version).tags or {}).get("run_dir", "/nonexistent"))
    if not (champ_dir / "predictions.csv").is_file():
        return None
    return {"version": champion.version, **compare_predictions(champ_dir / "predictions.csv", run_dir / "predictions.csv",
                                                               cfg.eval.bootstrap_resamples)}


def _tags(cfg: TunekitConfig, data, run_id: str) -> dict:
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


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
