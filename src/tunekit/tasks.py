"""The task table: one row per task, pointing at the stage functions that differ for it.

The task (classification, regression, generation, preference) is what varies most in tunekit. ``pipeline.run``
never asks which task it runs: it takes the row for ``cfg.task`` and calls the row's functions in
the lifecycle's order. Adding a task is one row here and the functions it
names, and a line in ``task_kinds.py`` (what the task is: causal, numeric, labelled; the facts the
stages ask). ``tests/test_tasks.py`` ties both tables to the config's ``task`` literal, so a task
the config accepts without a row (or a row the config does not accept) fails the suite.

Each function has the same signature in every row:

    prepare(cfg, console) -> data           read, check and freeze the splits; print the data summary
    baselines(cfg, data, console) -> [b]    the cheap references, each with ``name``, ``metrics``, ``seconds``
    shown(cfg) -> [metric]                  the metrics a baseline's console line shows
    load(path, cfg) -> model                the trained model as the server loads it (score what was saved)
    evaluate(cfg, data, model, baselines, run_dir, history, console) -> EvalResult
    manifest(model) -> dict                 fields the evaluation adds to ``tunekit.json`` (the temperature)
    reference(cfg, data, model, out_dir)    the drift reference that travels with the model
    rescore(cfg, data, path, console)       a champion's metrics on these rows, or None when not comparable
    card(card, data, baselines, model, trained)  the task's own sections of the report card
    evidence(card) -> [line]                the statistics under the console's metric table
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tunekit.config import (
    GENERATION_METRICS,
    PREFERENCE_METRICS,
    REGRESSION_METRICS,
    TunekitConfig,
)
from tunekit.data.prepared import Prepared
from tunekit.task_kinds import kind

__all__ = ["TASKS", "Task", "get"]


@dataclass(frozen=True)
class Task:
    """What one task does at each stage where tasks differ (see the module docstring for signatures)."""

    name: str
    prepare: Callable[[TunekitConfig, Console], Prepared]
    baselines: Callable[[TunekitConfig, Prepared, Console], list]
    shown: Callable[[TunekitConfig], list[str]]
    load: Callable[[Path, TunekitConfig], Any]
    evaluate: Callable[..., Any]
    manifest: Callable[[Any], dict]
    reference: Callable[[TunekitConfig, Prepared, Any, Path], Any]
    rescore: Callable[[TunekitConfig, Prepared, Path, Console], dict | None]
    card: Callable[..., None]
    evidence: Callable[[dict], list[str]]
    speed: str  # the training-speed figure this task reports (examples or tokens per second)


# --- classification and regression: labelled rows, an encoder with a head ----------------------

def _prepare_labelled(cfg: TunekitConfig, console: Console):
    from tunekit import data as data_stage
    from tunekit import models
    from tunekit.train import distributed

    tokenizer = models.load_tokenizer(cfg.model.base, cfg.model.revision)
    with distributed.main_first():  # rank 0 freezes the splits; the other ranks then read them
        data = data_stage.prepare(cfg, tokenizer)
    console.print(data_stage.summary(data), markup=False, highlight=False)
    return data


def _prepare_classification(cfg: TunekitConfig, console: Console):
    data = _prepare_labelled(cfg, console)
    noise = _label_noise(cfg, data)
    data.report["label_noise"] = noise
    if noise:
        console.print(f"Label-noise candidates: {noise['n_candidates']} training rows ({noise['share']:.1%}) whose label a "
                      "cross-validated baseline confidently contradicts; listed in the report card for review")
    return data


def _label_noise(cfg: TunekitConfig, data) -> dict | None:
    if not cfg.eval.label_noise:
        return None
    from tunekit.data import noise

    result = noise.for_prepared(data, seed=cfg.data.split.seed)
    if result:
        with (data.directory / "report.md").open("a", encoding="utf-8") as fh:
            fh.write("\n" + noise.markdown(result))
    return result


def _tfidf_baseline(cfg: TunekitConfig, data, console: Console) -> list:
    from tunekit import baseline

    return [baseline.run(cfg, data)]


def _load_trained(path: Path, cfg: TunekitConfig):
    from tunekit import models

    return models.load_trained(path)


def _evaluate_classification(cfg, data, model, baselines, run_dir, history, console):
    from tunekit import evaluate

    return evaluate.run(cfg, data, model, baselines[0], run_dir, history, console)


def _evaluate_regression(cfg, data, model, baselines, run_dir, history, console):
    from tunekit.evaluate.regression import run_regression

    return run_regression(cfg, data, model, baselines[0], run_dir, history)


def _reference_of_model(cfg, data, model, out_dir: Path):
    from tunekit.monitor import reference

    return reference.build(cfg, data, model, out_dir)


def _rescore_labelled(cfg: TunekitConfig, data, path: Path, console: Console) -> dict | None:
    from tunekit import evaluate, models

    champ = models.load_trained(path)
    if champ.task != cfg.task or champ.labels != data.labels:
        return None  # a different task or label set: the scores are not comparable
    return evaluate.score(champ, data, cfg.train.eval_batch_size)[0]


def _labelled_data_card(data) -> dict:
    return {"fingerprint": data.fingerprint, "test_fingerprint": data.test_fingerprint, "reused": data.reused,
            "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
            "n_labels": len(data.labels), "report_path": str(data.directory / "report.md"),
            **({"test_sample": data.test_sample} if getattr(data, "test_sample", None) else {})}  # eval.max_test_rows


def _classification_card(card: dict, data, baselines, model, trained) -> None:
    card["data"] = _labelled_data_card(data)
    card["label_noise"] = data.report.get("label_noise")


def _regression_card(card: dict, data, baselines, model, trained) -> None:
    """What a regression card has instead of labels: the target per split and the scaling."""
    card["data"] = {**_labelled_data_card(data), "target": data.report["target"]["per_split"]}
    card["train"]["target_scaling"] = model.info.target.model_dump() if model.info.target else None


# --- generation: conversations, a causal LM ------------------------------------------------------

def _prepare_generation(cfg: TunekitConfig, console: Console):
    from tunekit import methods, models
    from tunekit.data import conversations
    from tunekit.models import templates
    from tunekit.models.causal import load_causal_tokenizer
    from tunekit.train import distributed

    methods.check(cfg.method, models.pick_device(cfg.train.device))  # QLoRA without CUDA fails here, before any weights load
    tokenizer = load_causal_tokenizer(cfg.model.base, cfg.model.revision)
    with distributed.main_first():
        data = conversations.prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))
    console.print(conversations.summary(data), markup=False, highlight=False)
    return data


def _prompted_baselines(cfg: TunekitConfig, data, console: Console) -> list:
    """Zero- and k-shot prompting of the untouched base model, with the run's template."""
    from tunekit import methods, models
    from tunekit.baseline.prompted import run_prompted
    from tunekit.models.causal import base_generator, load_causal_base

    quantized = methods.SPECS[cfg.method.kind].quantized_base  # the baseline runs on the base training will use
    model, tokenizer = load_causal_base(cfg.model.base, cfg.model.revision, quantize_4bit=quantized)
    generator = base_generator(cfg, model, tokenizer, data.template, models.pick_device(cfg.train.device), quantized=quantized)
    return run_prompted(cfg, data, generator, console)


def _load_generator(path: Path, cfg: TunekitConfig):
    from tunekit.models.causal import load_generator

    return load_generator(path, cfg.train.device)


def _evaluate_generation(cfg, data, model, baselines, run_dir, history, console):
    from tunekit.evaluate.generation import run_generation

    return run_generation(cfg, data, model, baselines, run_dir, history, console)


def _reference_of_texts(cfg, data, model, out_dir: Path):
    from tunekit.monitor import reference

    return reference.build(cfg, data, None, out_dir)  # user-turn texts; generation has no label predictions to compare


def _rescore_generator(cfg: TunekitConfig, data, path: Path, console: Console) -> dict | None:
    from tunekit.evaluate.generation import score_generator
    from tunekit.models.causal import load_generator

    return score_generator(cfg, data, load_generator(path, cfg.train.device), console)[0]


def _generation_card(card: dict, data, baselines, model, trained) -> None:
    card["data"] = {"fingerprint": data.fingerprint, "test_fingerprint": data.test_fingerprint, "reused": data.reused,
                    "rows": {k: len(v) for k, v in data.rows.items()}, "report_path": str(data.directory / "report.md"),
                    "template": data.template.name, "overlength": data.report["overlength"]}
    card["baselines"] = [{"name": b.name, "metrics": b.metrics, "seconds": b.seconds} for b in baselines]
    card["train"]["best_score"] = -trained.best_score  # the validation loss of the kept epoch
    card["train"]["train_tokens_per_second"] = trained.train_tokens_per_second


# --- preference: pairs of a preferred and a non-preferred answer, a causal LM tuned by DPO or ORPO ---

def _prepare_preference(cfg: TunekitConfig, console: Console):
    from tunekit import methods, models
    from tunekit.data import preference
    from tunekit.models import templates
    from tunekit.models.causal import load_causal_tokenizer
    from tunekit.train import distributed

    methods.check(cfg.method, models.pick_device(cfg.train.device))
    tokenizer = load_causal_tokenizer(cfg.model.base, cfg.model.revision)
    with distributed.main_first():
        data = preference.prepare_preferences(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))
    console.print(preference.summary(data), markup=False, highlight=False)
    return data


def _starting_model(cfg: TunekitConfig, data, console: Console) -> list:
    """The starting model itself: its pair accuracy on the test pairs is what tuning must beat, and its
    log-probabilities are the reference of every reward margin."""
    from tunekit import methods, models
    from tunekit.evaluate.preference import run_starting
    from tunekit.models.causal import base_generator, load_causal_base

    quantized = methods.SPECS[cfg.method.kind].quantized_base
    model, tokenizer = load_causal_base(cfg.model.base, cfg.model.revision, quantize_4bit=quantized)
    generator = base_generator(cfg, model, tokenizer, data.template, models.pick_device(cfg.train.device), quantized=quantized)
    return [run_starting(cfg, data, generator)]


def _evaluate_preference(cfg, data, model, baselines, run_dir, history, console):
    from tunekit.evaluate.preference import run_preference

    return run_preference(cfg, data, model, baselines, run_dir, history, console)


def _rescore_preference(cfg: TunekitConfig, data, path: Path, console: Console) -> dict | None:
    """A champion's pair metrics on these test pairs, its reward margin against this run's starting model."""
    from tunekit.evaluate.preference import pair_metrics, score_pairs
    from tunekit.models.causal import load_generator

    champ = load_generator(path, cfg.train.device)
    if champ.info.task != cfg.task or champ.base_model != cfg.model.base:
        return None  # another task or another starting model: its margins are not comparable
    start = _starting_model(cfg.derive(**{"eval.side_by_side": 0}), data, console)[0]
    chosen, rejected = score_pairs(champ.model, data.encoded["test"], champ.tokenizer.pad_token_id, champ.device, cfg.train.eval_batch_size)
    return pair_metrics(chosen, rejected, start.chosen, start.rejected, cfg.preference.beta)


def _preference_card(card: dict, data, baselines, model, trained) -> None:
    card["data"] = {"fingerprint": data.fingerprint, "test_fingerprint": data.test_fingerprint, "reused": data.reused,
                    "rows": {k: len(v) for k, v in data.rows.items()}, "report_path": str(data.directory / "report.md"),
                    "template": data.template.name}
    card["train"]["best_score"] = -trained.best_score  # the validation preference loss of the kept epoch
    card["train"]["train_tokens_per_second"] = trained.train_tokens_per_second


def _preference_evidence(card: dict) -> list[str]:
    from tunekit.evaluate.preference import evidence_lines

    return evidence_lines(card)


def _no_manifest(model) -> dict:
    return {}


def _evidence(name: str) -> Callable[[dict], list[str]]:
    """The console's evidence lines for a task, imported when called (this module stays light,
    so every stage can import it)."""
    def lines(card: dict) -> list[str]:
        from tunekit.report import console

        return getattr(console, f"{name}_lines")(card)

    return lines


TASKS: dict[str, Task] = {
    "classification": Task(
        name="classification", prepare=_prepare_classification, baselines=_tfidf_baseline,
        shown=lambda cfg: list(dict.fromkeys([cfg.eval.primary, "accuracy"])), load=_load_trained,
        evaluate=_evaluate_classification, manifest=lambda model: {"temperature": model.info.temperature},
        reference=_reference_of_model, rescore=_rescore_labelled, card=_classification_card,
        evidence=_evidence("classification"), speed="train_examples_per_second"),
    "regression": Task(
        name="regression", prepare=_prepare_labelled, baselines=_tfidf_baseline, shown=lambda cfg: list(REGRESSION_METRICS),
        load=_load_trained, evaluate=_evaluate_regression, manifest=_no_manifest, reference=_reference_of_model,
        rescore=_rescore_labelled, card=_regression_card, evidence=_evidence("regression"), speed="train_examples_per_second"),
    "generation": Task(
        name="generation", prepare=_prepare_generation, baselines=_prompted_baselines, shown=lambda cfg: list(GENERATION_METRICS),
        load=_load_generator, evaluate=_evaluate_generation, manifest=_no_manifest, reference=_reference_of_texts,
        rescore=_rescore_generator, card=_generation_card, evidence=_evidence("generation"), speed="train_tokens_per_second"),
    "preference": Task(
        name="preference", prepare=_prepare_preference, baselines=_starting_model, shown=lambda cfg: list(PREFERENCE_METRICS),
        load=_load_generator, evaluate=_evaluate_preference, manifest=_no_manifest, reference=_reference_of_texts,
        rescore=_rescore_preference, card=_preference_card, evidence=_preference_evidence, speed="train_tokens_per_second"),
}


def get(name: str) -> Task:
    """The row of task ``name``; an unknown name lists the tasks there are."""
    return TASKS[kind(name).name]


def config_tasks() -> set[str]:
    """The values the config's ``task`` field accepts (the literal the table must match)."""
    return set(typing.get_args(TunekitConfig.model_fields["task"].annotation))
