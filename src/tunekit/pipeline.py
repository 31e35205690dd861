"""The whole lifecycle on one screen: data, baseline, train, evaluate, register + gate, report.

``run`` is what ``tunekit run CONFIG`` does. Each step calls one stage's entry function; the order
matters only where a later stage reads an earlier one's output (the baseline and the model are
scored on the frozen test split that ``data.prepare`` made; the gate needs the MLflow version).
``task: regression`` takes the same path: each stage branches on the task where numbers differ from
labels (TF-IDF + ridge baseline, standardised MSE training, error metrics, direction-aware gate).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tunekit import baseline, evaluate, methods, models, registry, train
from tunekit import data as data_stage
from tunekit.config import (
    GENERATION_METRICS,
    REGRESSION_METRICS,
    TunekitConfig,
    lower_is_better,
)
from tunekit.evaluate import report
from tunekit.evaluate.metrics import headline
from tunekit.lineage import git_commit, package_versions
from tunekit.monitor import reference as monitor_reference
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
    run_id = resume or datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    run_dir = cfg.workspace_dir / "runs" / run_id
    if cfg.task == "generation":
        return _run_generation(cfg, console, resume, run_id, run_dir)

    console.rule("[bold]1/5 data")
    tokenizer = models.load_tokenizer(cfg.model.base, cfg.model.revision)
    with distributed.main_first():  # rank 0 freezes the splits; the other ranks then read them
        data = data_stage.prepare(cfg, tokenizer)
    console.print(data_stage.summary(data), markup=False, highlight=False)
    noise = _label_noise(cfg, data)
    if noise:
        console.print(f"Label-noise candidates: {noise['n_candidates']} training rows ({noise['share']:.1%}) whose label a "
                      "cross-validated baseline confidently contradicts; listed in the report card for review")

    console.rule("[bold]2/5 baseline")
    base = baseline.run(cfg, data)
    if data.regression:
        console.print(f"{base.name}: test " + ", ".join(f"{k} {base.metrics[k]:.4f}" for k in REGRESSION_METRICS) + f" ({base.seconds:.1f} s)")
    else:
        console.print(f"{base.name}: test {cfg.eval.primary} {base.metrics[cfg.eval.primary]:.4f}, accuracy {base.metrics['accuracy']:.4f} ({base.seconds:.1f} s)")

    console.rule(f"[bold]3/5 train ({cfg.method.kind} on {cfg.model.base})")
    trained = train.run(cfg, data, run_dir / "adapter", console, resume=resume is not None)
    if not distributed.is_main():
        return None  # ranks other than 0 only helped train; rank 0 evaluates, registers and reports

    console.rule("[bold]4/5 evaluate")
    model = models.load_trained(run_dir / "adapter")  # score exactly what was saved, as the server will load it
    result = evaluate.run(cfg, data, model, base, run_dir, trained.history)
    train.update_manifest(run_dir / "adapter", metrics=headline(result.metrics), baseline_metrics=headline(base.metrics),
                          **({} if data.regression else {"temperature": model.info.get("temperature", 1.0)}))
    monitor_reference.build(cfg, data, model, run_dir / "adapter")  # drift reference; travels with the adapter to MLflow and the server

    console.rule("[bold]5/5 register")
    mlc = registry.client(cfg.tracking, cfg.workspace_dir)
    champion = champion_score(mlc, cfg, data)
    if champion is not None and champion.how == "recorded":
        result.analysis["versus_champion"] = _versus_champion(mlc, cfg, champion, run_dir)
    decision = registry.decide(cfg.eval.primary, result.metrics[cfg.eval.primary], base.metrics[cfg.eval.primary],
                               cfg.gate.min_improvement, champion, cfg.gate.beat_champion,
                               result.analysis.get("suite") if cfg.gate.require_suite else None, result.analysis.get("tasks"))
    tags = _tags(cfg, data, run_id)
    version, mlflow_run = _register(mlc, cfg, run_dir, data, base, result, trained, tags,
                                    {"train_examples_per_second": trained.train_examples_per_second},
                                    {"task": "regression"} if data.regression else {})
    registry.set_alias(mlc, cfg.name, version, decision)

    card = _card(cfg, run_id, run_dir, data, base, trained, result, decision, version, mlflow_run, tags)
    card["label_noise"] = noise
    if data.regression:
        _regression_card(card, data, model)
    md, js, page = report.write(card, run_dir)
    for path in (md, js, page):
        mlc.log_artifact(mlflow_run, str(path), "report")
    _print_summary(console, cfg, card, page)
    return RunOutcome(run_id, run_dir, version, decision, card)


def _run_generation(cfg: TunekitConfig, console: Console, resume: str | None, run_id: str, run_dir: Path) -> RunOutcome:
    """The same lifecycle for ``task: generation``: conversations, the prompted base model as
    baseline, SFT of a causal LM, decoding-based evaluation, and the same registry and gate."""
    from tunekit.baseline.prompted import run_prompted
    from tunekit.data import conversations
    from tunekit.evaluate.generation import best_baseline, run_generation
    from tunekit.models import templates
    from tunekit.models.causal import base_generator, load_causal_base, load_generator

    methods.check(cfg.method, models.pick_device(cfg.train.device))  # QLoRA without CUDA fails here, before any weights load
    console.rule("[bold]1/5 data")
    base_model, tokenizer = load_causal_base(cfg.model.base, cfg.model.revision, quantize_4bit=cfg.method.kind == "qlora")
    template = templates.resolve(tokenizer, cfg.model.template)
    with distributed.main_first():
        data = conversations.prepare_conversations(cfg, tokenizer, template)
    console.print(conversations.summary(data), markup=False, highlight=False)

    console.rule("[bold]2/5 baseline")
    device = models.pick_device(cfg.train.device)
    base_gen = base_generator(cfg, base_model, tokenizer, template, device, quantized=cfg.method.kind == "qlora")
    baselines = run_prompted(cfg, data, base_gen, console)
    for b in baselines:
        console.print(f"{b.name}: test " + ", ".join(f"{k} {b.metrics[k]:.4f}" for k in GENERATION_METRICS) + f" ({b.seconds:.1f} s)")
    base = best_baseline(baselines, cfg.eval.primary)
    del base_gen, base_model

    console.rule(f"[bold]3/5 train ({cfg.method.kind} on {cfg.model.base})")
    trained = train.run(cfg, data, run_dir / "adapter", console, resume=resume is not None)
    if not distributed.is_main():
        return None  # ranks other than 0 only helped train; rank 0 evaluates, registers and reports

    console.rule("[bold]4/5 evaluate")
    generator = load_generator(run_dir / "adapter", cfg.train.device)  # score exactly what was saved, as the server will load it
    result = run_generation(cfg, data, generator, baselines, run_dir, trained.history, console)
    train.update_manifest(run_dir / "adapter", metrics=headline(result.metrics), baseline_metrics=headline(base.metrics))
    monitor_reference.build(cfg, data, None, run_dir / "adapter")  # user-turn texts; generation has no label predictions to compare

    console.rule("[bold]5/5 register")
    mlc = registry.client(cfg.tracking, cfg.workspace_dir)
    champion = _generation_champion(mlc, cfg, data, console)
    decision = registry.decide(cfg.eval.primary, result.metrics[cfg.eval.primary], base.metrics[cfg.eval.primary],
                               cfg.gate.min_improvement, champion, cfg.gate.beat_champion, None)
    tags = _tags(cfg, data, run_id)
    version, mlflow_run = _register(mlc, cfg, run_dir, data, base, result, trained, tags,
                                    {"train_tokens_per_second": trained.train_tokens_per_second}, {"task": "generation"})
    registry.set_alias(mlc, cfg.name, version, decision)

    card = _generation_card(cfg, run_id, run_dir, data, baselines, base, trained, result, decision, version, mlflow_run, tags)
    md, js, page = report.write(card, run_dir)
    for path in (md, js, page):
        mlc.log_artifact(mlflow_run, str(path), "report")
    _print_summary(console, cfg, card, page)
    return RunOutcome(run_id, run_dir, version, decision, card)


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


def _generation_champion(mlc, cfg: TunekitConfig, data, console) -> registry.ChampionScore | None:
    """The champion's primary metric on this run's scored test rows: recorded when it was tested on
    the same rows with the same decoding, else decoded now."""
    mv, recorded = _recorded_champion(mlc, cfg, data)
    if mv is None or recorded is not None:
        return recorded
    from tunekit.evaluate.generation import score_generator
    from tunekit.models.causal import load_generator

    resolved = registry.resolve(f"{cfg.name}/{mv.version}", cfg.tracking)
    metrics, _ = score_generator(cfg, data, load_generator(resolved.path, cfg.train.device), console)
    return registry.ChampionScore(str(mv.version), metrics[cfg.eval.primary], "re-evaluated")


def _generation_card(cfg, run_id, run_dir, data, baselines, base, trained, result, decision, version, mlflow_run, tags) -> dict:
    card = _card(cfg, run_id, run_dir, data, base, trained, result, decision, version, mlflow_run, tags)
    card["task"] = "generation"
    card["data"] = {"fingerprint": data.fingerprint, "test_fingerprint": data.test_fingerprint, "reused": data.reused,
                    "rows": {k: len(v) for k, v in data.rows.items()}, "report_path": str(data.directory / "report.md"),
                    "template": data.template.name, "overlength": data.report["overlength"]}
    card["baselines"] = [{"name": b.name, "metrics": b.metrics, "seconds": b.seconds} for b in baselines]
    card["train"]["best_score"] = -trained.best_score  # the validation loss of the kept epoch
    card["train"]["train_tokens_per_second"] = trained.train_tokens_per_second
    return card


def champion_score(mlc, cfg: TunekitConfig, data) -> registry.ChampionScore | None:
    """The current champion's primary metric on this run's test rows: the recorded one when it
    was tested on the same rows, else measured now (if its labels match), else not comparable."""
    mv, recorded = _recorded_champion(mlc, cfg, data)
    if mv is None or recorded is not None:
        return recorded
    resolved = registry.resolve(f"{cfg.name}/{mv.version}", cfg.tracking)
    champ = models.load_trained(resolved.path)
    if champ.task != cfg.task or champ.labels != data.labels:
        return None  # a different task or label set: the scores are not comparable, and decide() says there is no champion to beat
    metrics, _ = evaluate.score(champ, data, cfg.train.eval_batch_size)
    return registry.ChampionScore(str(mv.version), metrics[cfg.eval.primary], "re-evaluated")


def _versus_champion(mlc, cfg: TunekitConfig, champion: registry.ChampionScore, run_dir: Path) -> dict | None:
    """Paired statistics against the champion's own predictions on the same rows, when its run
    folder is on this machine (its path is a tag of the version)."""
    from tunekit.evaluate.compare import compare_predictions

    champ_dir = Path((mlc.get_model_version(cfg.name, champion.version).tags or {}).get("run_dir", "/nonexistent"))
    if not (champ_dir / "predictions.csv").is_file():
        return None
    return {"version": champion.version, **compare_predictions(champ_dir / "predictions.csv", run_dir / "predictions.csv",
                                                               cfg.eval.bootstrap_resamples)}


def _label_noise(cfg: TunekitConfig, data) -> dict | None:
    if not cfg.eval.label_noise or data.regression:  # a number has no label to contradict
        return None
    from tunekit.data import noise

    result = noise.for_prepared(data, seed=cfg.data.split.seed)
    if result:
        with (data.directory / "report.md").open("a", encoding="utf-8") as fh:
            fh.write("\n" + noise.markdown(result))
    return result


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


def _card(cfg, run_id, run_dir, data, base, trained, result, decision, version, mlflow_run, tags) -> dict:
    return {
        "name": cfg.name, "run_id": run_id, "primary": cfg.eval.primary, "method": cfg.method.kind,
        "base_model": cfg.model.base, "adapter_dir": str(run_dir / "adapter"),
        "data": {"fingerprint": data.fingerprint, "test_fingerprint": data.test_fingerprint, "reused": data.reused,
                 "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
                 "n_labels": len(data.labels), "report_path": str(data.directory / "report.md")},
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


def _regression_card(card: dict, data, model) -> None:
    """What a regression card has instead of labels: the task, the target per split and the scaling."""
    card["task"] = "regression"
    card["data"]["target"] = data.report["target"]["per_split"]
    card["train"]["target_scaling"] = model.info.get("target")


def _print_summary(console: Console, cfg: TunekitConfig, card: dict, report_page: Path) -> None:
    table = Table(title=f"{cfg.name}: test metrics on {card['data']['rows']['test']} rows")
    table.add_column("metric")
    table.add_column(f"baseline ({card['baseline']['name']})", justify="right")
    table.add_column(f"fine-tuned ({cfg.method.kind})", justify="right")
    table.add_column("difference", justify="right")
    for metric, b, t, d in report.comparison_rows(card):
        style = "bold" if metric == cfg.eval.primary else None
        word = report.change_word(metric, d)
        colour = {"better": "green", "worse": "red"}.get(word, "default")
        name = f"{metric} (lower is better)" if lower_is_better(metric) else metric
        table.add_row(name, f"{b:.4f}", f"{t:.4f}", f"[{colour}]{d:+.4f} ({word})[/]", style=style)
    console.print(table)
    for line in _evidence_lines(card):
        console.print(line, highlight=False)
    reg = card["registry"]
    colour = "green" if reg["passed"] else "yellow"
    console.print(f"[{colour}]Registered {cfg.name} version {reg['version']} as [bold]{reg['alias']}[/bold][/]: {reg['reason']}")
    console.print(f"Report card: {report_page} (also .md and .json)")
    if reg["passed"]:
        found = cfg.tracking == registry.default_tracking_uri()
        console.print(f"Serve it:    tunekit serve --model {cfg.name}@champion" + ("" if found else f" --tracking-uri {cfg.tracking}"))


def _evidence_lines(card: dict) -> list[str]:
    """The statistics behind the table, one line each (details in the report card)."""
    a, primary, lines = card["analysis"], card["primary"], []
    if card.get("task") == "generation":
        r, m = a["versus_baseline"][primary], card["model"]["metrics"]
        lines.append(f"{primary} difference {r['diff']:+.4f}, 95% interval [{r['low']:+.4f}, {r['high']:+.4f}] (paired bootstrap "
                     f"against {card['baseline']['name']}, {m['scored_rows']} test rows, greedy decoding)")
        lines.append(f"test loss {m['test_loss']:.4f} (perplexity {m['test_perplexity']:.2f}); baselines: "
                     + ", ".join(f"{b['name']} {b['metrics'][primary]:.4f}" for b in card["baselines"]))
        return lines
    if card.get("task") == "regression":
        return _regression_evidence(card)
    r = a["versus_baseline"].get(primary) or a["versus_baseline"]["accuracy"]
    lines.append(f"{primary if primary in a['versus_baseline'] else 'accuracy'} difference {r['diff']:+.4f}, 95% interval "
                 f"[{r['low']:+.4f}, {r['high']:+.4f}] (paired bootstrap); McNemar p = {a['mcnemar']['p_value']:.3g}")
    worse = [s["slice"] for s in a["slices"] if s["worse"]]
    more = f" and {len(worse) - 6} more" if len(worse) > 6 else ""
    lines.append(f"slices worse than the baseline: {', '.join(worse[:6]) + more if worse else 'none'}")
    if "calibration" in a:
        c = a["calibration"]
        lines.append(f"calibration error (ECE) {c['ece_before']:.4f} -> {c['ece_after']:.4f} with temperature "
                     f"{c.get('fitted_temperature', c['temperature']):.2f} " + ("(applied by the server)" if c.get("applied", True)
                                                                                 else "(not applied: it did not help on held-out validation rows)"))
    if "robustness" in a:
        lines.append("flip rate under edits: " + ", ".join(f"{k} {v['flip_rate']:.1%}" for k, v in a["robustness"].items()))
    if "suite" in a:
        lines.append(f"behavioural suite: {a['suite']['passed']} passed, {a['suite']['failed']} failed")
    return lines


def _regression_evidence(card: dict) -> list[str]:
    """The regression statistics in words: which model is better on the primary error, how sure."""
    a, primary = card["analysis"], card["primary"]
    r, m, b = a["versus_baseline"][primary], card["model"]["metrics"], card["baseline"]["metrics"]
    word = report.change_word(primary, r["diff"])
    verdict = "the same as" if word == "same" else f"{word} than"
    sure = "excludes 0" if r["low"] > 0 or r["high"] < 0 else "includes 0: not a clear difference"
    lines = [f"{primary}: fine-tuned {r['b']:.4f} is {verdict} the baseline's {r['a']:.4f}"
             + (" (lower is better)" if lower_is_better(primary) else "") + f"; the 95% interval of fine-tuned minus baseline "
             f"[{r['low']:+.4f}, {r['high']:+.4f}] (paired bootstrap) {sure}"]
    if primary != "r2":
        lines.append(f"R² fine-tuned {m['r2']:.4f} vs baseline {b['r2']:.4f} (1 is perfect, 0 is predicting the mean)")
    worse = [s["slice"] for s in a["slices"] if s["worse"]]
    more = f" and {len(worse) - 6} more" if len(worse) > 6 else ""
    lines.append(f"slices worse than the baseline: {', '.join(worse[:6]) + more if worse else 'none'}")
    return lines
