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
from tunekit.artifacts import Manifest, Workspace
from tunekit.registry import entry
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
    trained: train.TrainResult | None = None  # how training went (history, trained tokens, speed)


def run(cfg: TunekitConfig, console: Console | None = None, resume: str | None = None, run_id: str | None = None) -> RunOutcome | None:
    """The lifecycle; ``resume`` is the id of an interrupted run whose training continues from its checkpoint,
    ``run_id`` names a new run (default: the time and 4 random hex digits; a fine-tuning job passes its own id,
    so that it can resume the run after a worker died). In a data-parallel run only rank 0 returns the
    outcome; the other ranks return None after training."""
    console = console or Console()
    task = tasks.get(cfg.task)
    run_id = resume or run_id or datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
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
    test, base_test = headline(result.metrics), headline(base.metrics)
    Manifest.update(run_dir / "adapter", metrics=test, baseline_metrics=base_test, **task.manifest(model))
    task.reference(cfg, data, model, run_dir / "adapter")  # drift reference; travels with the adapter to MLflow and the server

    console.rule("[bold]5/5 register")
    mlc = registry.client(cfg.tracking, cfg.workspace_dir)
    tags = entry.run_tags(cfg, data, run_id)
    champion = entry.champion_score(mlc, cfg, data, lambda path: task.rescore(cfg, data, path, console))
    if champion is not None and champion.how == "recorded":
        result.analysis["versus_champion"] = _versus_champion(mlc, cfg, champion, run_dir)
    version, mlflow_run, decision = entry.gate_and_register(
        mlc, cfg, data, run_dir, trained, test=test, baseline=base_test, analysis=result.analysis, files=list(result.files.values()),
        champion=champion, tags=tags, metrics={task.speed: getattr(trained, task.speed)})

    card = report.build(cfg, run_id, run_dir, base, trained, result, decision, version, mlflow_run, tags)
    task.card(card, data, baselines, model, trained)
    for path in report.write(card, run_dir):
        mlc.log_artifact(mlflow_run, str(path), "report")
    summary.print_summary(console, card, task.evidence(card), run_dir / "report.html", cfg.tracking == registry.default_tracking_uri())
    return RunOutcome(run_id, run_dir, version, decision, card, trained)



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
    before, now = entry.flatten(json.loads(saved.read_text())), entry.flatten(cfg.model_dump(mode="json"))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        said = "; ".join(f"{k}: {before.get(k)!r} when the run started, {now.get(k)!r} now" for k in changed)
        sets = " ".join(f"--set {k}={json.dumps(before.get(k))}" for k in changed if k in before)
        raise ConfigError(f"--resume {run_dir.name}: the config differs from the one the run started with ({said}). A resumed run must "
                          f"train exactly as it began: resume with the original values ({sets}), or start a new run without --resume")


def _versus_champion(mlc, cfg: TunekitConfig, champion: registry.ChampionScore, run_dir: Path) -> dict | None:
    """Paired statistics against the champion's own predictions on the same rows, when its run
    folder is on this machine (its path is a tag of the version)."""
    from tunekit.report.compare import compare_predictions

    champ_dir = Path((mlc.get_model_version(cfg.name, champion.version).tags or {}).get("run_dir", "/nonexistent"))
    if not (champ_dir / "predictions.csv").is_file():
        return None
    return {"version": champion.version, **compare_predictions(champ_dir / "predictions.csv", run_dir / "predictions.csv",
                                                               cfg.eval.bootstrap_resamples)}
