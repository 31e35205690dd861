"""``tunekit compare-methods``: train several adaptation methods on the same frozen splits and
put cost beside quality in one table.

Each method trains in its own spawned process, so its peak memory is its own (GPU memory on CUDA,
else the process's resident high-water mark), with the config's settings and the method's default
options and learning rate. Methods this machine cannot run (QLoRA without CUDA) are refused by
name before anything trains. Every method is scored on the same test rows as the baseline, with a
paired bootstrap interval for its difference from the baseline.

The three tasks differ only in what a prediction is and who the baseline is: a label against
TF-IDF + logistic regression, a number against TF-IDF + ridge, an answer text against the best of
the prompted base model (zero- or k-shot, on the ``eval.max_test_rows`` scored rows, as ``tunekit
run`` picks it). ``_reference``, ``_train_and_predict`` and ``_versus_baseline`` hold those
differences; the table is the same for every task. The difference is always method minus
baseline, as everywhere in tunekit; for an error metric (rmse, mae, mse) lower is better, so there
a negative difference is the improvement, and the table's title and notes say so in words.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tunekit import baseline, methods, models, task_kinds
from tunekit import data as data_stage
from tunekit.artifacts import Workspace
from tunekit.config import TunekitConfig, lower_is_better
from tunekit.errors import ConfigError, TunekitError
from tunekit.evaluate import stats
from tunekit.evaluate.metrics import REGRESSION_FNS, best, classification_metrics
from tunekit.report.markdown import change_word

__all__ = ["compare_methods"]


@dataclass
class _Reference:
    """The baseline on the scored test rows: what every method's predictions are paired against."""

    name: str
    score: float        # the primary metric
    seconds: float
    truth: list         # labels, targets or reference answers, one per scored test row
    predictions: list   # the baseline's label ids, values or answers on the same rows
    test_fingerprint: str
    labels: list[str]   # classification only; empty otherwise


def compare_methods(cfg: TunekitConfig, kinds: list[str], console: Console | None = None) -> dict:
    """Train each of ``kinds`` and return (and write) the comparison table."""
    console = console or Console()
    _check_methods(cfg, kinds)
    ref = _reference(cfg, console)
    out_dir = Workspace(cfg.workspace_dir).compare / datetime.now().strftime("%Y%m%d-%H%M%S")
    primary = cfg.eval.primary
    rows = [{"method": f"baseline ({ref.name})", "trainable_params": None, "size_mb": None, "peak_memory_mb": None,
             "train_seconds": ref.seconds, primary: ref.score, "diff": None, "low": None, "high": None}]
    for kind in kinds:
        console.rule(f"[bold]{kind}")
        # the method's own default learning rate (for generation, GENERATION_LEARNING_RATE through cfg.learning_rate)
        method_cfg = cfg.derive(method={"kind": kind}, **{"train.learning_rate": None, "train.head_learning_rate": None})
        result = _train_in_child(method_cfg, out_dir / kind)
        versus = _versus_baseline(cfg, ref, result["predictions"])
        rows.append({"method": kind, "trainable_params": result["trainable_params"], "size_mb": _size_mb(out_dir / kind),
                     "peak_memory_mb": result["peak_memory_mb"], "train_seconds": result["seconds"], **versus})
    table = {"name": cfg.name, "task": cfg.task, "primary": primary, "lower_is_better": lower_is_better(primary),
             "peak_memory": _memory_kind(cfg), "test_rows": len(ref.truth), "test_fingerprint": ref.test_fingerprint, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(table, indent=2))
    (out_dir / "compare.md").write_text(markdown(table))
    console.print(_rich(table))
    console.print(f"Table: {out_dir / 'compare.md'}")
    return table


def _check_methods(cfg: TunekitConfig, kinds: list[str]) -> None:
    """Refuse unknown methods and those this machine cannot run (QLoRA without CUDA) before the
    baseline or any method trains, so a long comparison does not die half way through."""
    unknown = [k for k in kinds if k not in methods.SPECS]
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown}; choose from {', '.join(methods.SPECS)}")
    device = models.pick_device(cfg.train.device)
    for kind in kinds:
        try:
            methods.check(methods.SPECS[kind].config(), device)
        except TunekitError as exc:
            raise ConfigError(f"--methods {kind}: {exc}. Leave {kind} out of --methods on this machine.") from None


def _memory_kind(cfg: TunekitConfig) -> str:
    """What the peak-memory column measures: what limits a method is GPU memory on a GPU, RAM without one."""
    on_gpu = models.pick_device(cfg.train.device).type == "cuda"
    return "GPU memory allocated (torch peak)" if on_gpu else "resident memory (high-water mark)"


def _reference(cfg: TunekitConfig, console: Console) -> _Reference:
    """The baseline ``tunekit run`` would compare with, on the same frozen test rows."""
    if task_kinds.kind(cfg.task).causal:
        return _prompted_reference(cfg, console)
    data = data_stage.prepare(cfg)
    base = baseline.run(cfg, data)
    truth = list(data.test["label"])
    predictions = base.values if task_kinds.kind(cfg.task).numeric else base.probs.argmax(1)
    return _Reference(base.name, base.metrics[cfg.eval.primary], base.seconds, truth, predictions.tolist(),
                      data.test_fingerprint, data.labels)


def _prompted_reference(cfg: TunekitConfig, console: Console) -> _Reference:
    """The best of the untouched base model zero- and k-shot, as ``tunekit run`` picks it.
    The base model is the plain (unquantised) one, and it is freed before the first method trains,
    so this process holds no accelerator memory while the children train."""
    import torch

    from tunekit.baseline.prompted import run_prompted
    from tunekit.data.answers import scored_rows
    from tunekit.data.conversations import prepare_conversations, prompt_and_reference
    from tunekit.models import templates
    from tunekit.models.causal import base_generator, load_causal_base

    device = models.pick_device(cfg.train.device)
    model, tokenizer = load_causal_base(cfg.model.base, cfg.model.revision)
    template = templates.resolve(tokenizer, cfg.model.template)
    data = prepare_conversations(cfg, tokenizer, template)
    generator = base_generator(cfg, model, tokenizer, template, device)
    base = best(run_prompted(cfg, data, generator, console), cfg.eval.primary)
    del generator, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    refs = [prompt_and_reference(data.test[i])[1] for i in scored_rows(cfg, data)]
    return _Reference(base.name, base.metrics[cfg.eval.primary], base.seconds, refs, base.predictions, data.test_fingerprint, [])


def _versus_baseline(cfg: TunekitConfig, ref: _Reference, predictions: list) -> dict:
    """The method's primary metric and the paired bootstrap of method minus baseline on the same rows.
    Generated text goes through ``textgen.compare`` (corpus BLEU and chrF resample from n-gram counts)."""
    primary, n, seed = cfg.eval.primary, cfg.eval.bootstrap_resamples, cfg.train.seed
    if task_kinds.kind(cfg.task).causal:
        from tunekit.evaluate import textgen

        r = textgen.compare(ref.predictions, predictions, ref.truth, n, seed=seed, extract=cfg.eval.extract)[primary]
        return {primary: r["model"], "diff": r["diff"], "low": r["low"], "high": r["high"]}
    if task_kinds.kind(cfg.task).numeric:
        metric_fn = REGRESSION_FNS[primary]
    else:
        metric_fn = lambda y, p: classification_metrics(y, p, ref.labels)[primary]
    r = stats.paired_bootstrap(np.asarray(ref.truth), np.asarray(ref.predictions), np.asarray(predictions), metric_fn, n, seed)
    return {primary: r["b"], "diff": r["diff"], "low": r["low"], "high": r["high"]}


def _size_mb(adapter_dir: Path) -> float:
    """Weights on disk (the tokenizer and manifest are the same for every method)."""
    return round(sum(p.stat().st_size for p in adapter_dir.glob("*.safetensors")) / 2**20, 2)


def _train_in_child(cfg: TunekitConfig, out_dir: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(cfg.dump(), str(cfg.source_dir), str(cfg.working_dir), str(out_dir), queue))
    proc.start()
    result = _wait_for(proc, queue, cfg.method.kind)
    proc.join()
    if "error" in result:
        raise ConfigError(f"method.kind {cfg.method.kind}: {result['error']}")
    return result


def _wait_for(proc, queue, kind: str) -> dict:
    """The child's report; an error, not a hang, when it dies without one (killed for memory, a crash)."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=2)
        except queues.Empty:
            if not proc.is_alive():
                how = "was killed (SIGKILL, often the out-of-memory killer)" if proc.exitcode == -9 else f"exited with code {proc.exitcode}"
                raise TunekitError(f"method.kind {kind}: its training process {how} before reporting a result; "
                                   "check memory (`tunekit plan CONFIG`) or leave the method out of --methods") from None


def _child(raw: dict, source_dir: str, cwd: str, out_dir: str, queue) -> None:
    """Train one method in a fresh process and report its figures."""
    from tunekit.artifacts import quiet_libraries

    quiet_libraries()
    try:
        cfg = TunekitConfig.from_dump(raw, source_dir, cwd)
        result, predictions = _train_and_predict(cfg, Path(out_dir))
        queue.put({"trainable_params": result.trainable_params, "seconds": result.seconds, "predictions": predictions,
                   "peak_memory_mb": result.peak_memory_mb})
    except Exception as exc:  # noqa: BLE001 - reported by the parent with the method's name
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _train_and_predict(cfg: TunekitConfig, out_dir: Path) -> tuple:
    """Train, then answer the scored test rows with what was saved (as the server will load it):
    label ids, target values or answer texts, in the order of ``_Reference.truth``."""
    from tunekit import train

    if task_kinds.kind(cfg.task).causal:
        from tunekit.data.conversations import prepare_conversations
        from tunekit.evaluate.generation import score_generator
        from tunekit.models import templates
        from tunekit.models.causal import load_generator

        tokenizer = models.load_tokenizer(cfg.model.base, cfg.model.revision)
        data = prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))
        result = train.run(cfg, data, out_dir)
        _, answers = score_generator(cfg, data, load_generator(out_dir, cfg.train.device))
        return result, answers
    from tunekit.data.prepare import text_pairs

    data = data_stage.prepare(cfg)
    result = train.run(cfg, data, out_dir)
    model = models.load_trained(out_dir)
    texts, pairs, batch = list(data.test["text"]), text_pairs(data.test), cfg.train.eval_batch_size
    if task_kinds.kind(cfg.task).numeric:
        return result, model.predict(texts, pairs, batch).tolist()
    from tunekit.data.multitask import restrict_split

    return result, restrict_split(model.predict_proba(texts, pairs, batch), data, data.test).argmax(1).tolist()


def markdown(table: dict) -> str:
    primary = table["primary"]
    lines = [f"# {table['name']}: adaptation methods on the same {table['test_rows']} test rows ({primary}, {_direction(table)})", "",
             f"| method | trainable parameters | weights on disk (MB) | peak memory (MB) | train time (s) | test {primary} | vs baseline (95% interval) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['method']} | {_num(r['trainable_params'])} | {_num(r['size_mb'])} | {_num(r['peak_memory_mb'])} | "
                     f"{r['train_seconds']:.1f} | {r[primary]:.4f} | {_versus(r, primary)} |")
    good = "negative" if table["lower_is_better"] else "positive"
    return "\n".join(lines) + (f"\n\nvs baseline: {primary} of the method minus the baseline's on the same rows, with a paired "
                               f"bootstrap 95% interval. For {primary} {_direction(table)}, so a {good} difference means the "
                               "method beats the baseline; `better` or `worse` is written only where the interval excludes 0. "
                               f"Peak memory: {table['peak_memory']} of the process that trained the method.\n")


def _direction(table: dict) -> str:
    return "lower is better" if table["lower_is_better"] else "higher is better"


def _versus(row: dict, primary: str) -> str:
    """The difference, its interval and, when the interval excludes 0, which way that is in words."""
    if row["diff"] is None:
        return ""
    clear = row["low"] > 0 or row["high"] < 0
    word = change_word(primary, row["diff"]) if clear else "no clear difference"
    return f"{row['diff']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}] {word}"


def _num(value) -> str:
    return "" if value is None else f"{value:,}"


def _rich(table: dict) -> Table:
    primary = table["primary"]
    out = Table(title=f"{table['name']}: methods on {table['test_rows']} test rows ({primary}, {_direction(table)})")
    for col in ("method", "trainable", "weights MB", "peak MB", "train s", primary, "vs baseline [95%]"):
        out.add_column(col, justify="left" if col == "method" else "right")
    for r in table["rows"]:
        out.add_row(r["method"], _num(r["trainable_params"]), _num(r["size_mb"]), _num(r["peak_memory_mb"]),
                    f"{r['train_seconds']:.1f}", f"{r[primary]:.4f}", _versus(r, primary))
    return out
