"""``tunekit compare-methods``: train several adaptation methods on the same frozen splits and
put cost beside accuracy in one table.

Each method trains in its own process, so its peak memory is its own (the resident-set maximum of
a process never goes down), with the config's settings and the method's default options and
learning rate. Every method is scored on the same test rows as the baseline, with a paired
bootstrap interval for its difference from the baseline.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tunekit import baseline, data as data_stage
from tunekit.config import METHODS, TunekitConfig
from tunekit.errors import ConfigError
from tunekit.evaluate import stats
from tunekit.evaluate.metrics import classification_metrics

__all__ = ["compare_methods"]

def compare_methods(cfg: TunekitConfig, kinds: list[str], console: Console | None = None) -> dict:
    """Train each of ``kinds`` and return (and write) the comparison table."""
    console = console or Console()
    unknown = [k for k in kinds if k not in METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if cfg.task != "classification":
        raise ConfigError(f"compare-methods compares classification methods so far; this config's task is {cfg.task}. "
                          "Run `tunekit run` once per method (--set method.kind=...) and `tunekit report RUN --compare RUN2` instead.")
    data = data_stage.prepare(cfg)
    base = baseline.run(cfg, data)
    out_dir = cfg.workspace_dir / "compare" / datetime.now().strftime("%Y%m%d-%H%M%S")
    y = np.asarray(list(data.test["label"]))
    rows = [{"method": f"baseline ({base.name})", "trainable_params": None, "size_mb": None, "peak_memory_mb": None,
             "train_seconds": base.seconds, cfg.eval.primary: base.metrics[cfg.eval.primary], "diff": None, "low": None, "high": None}]
    for kind in kinds:
        console.rule(f"[bold]{kind}")
        method_cfg = cfg.model_copy(update={"method": METHODS[kind](), "train": cfg.train.model_copy(update={"learning_rate": None, "head_learning_rate": None})})
        result = _train_in_child(method_cfg, out_dir / kind)
        pred = np.asarray(result["probs"]).argmax(1)
        ci = stats.paired_bootstrap(y, base.probs.argmax(1), pred, _metric_fn(cfg.eval.primary, data.labels),
                                    n_resamples=cfg.eval.bootstrap_resamples, seed=cfg.train.seed)
        rows.append({"method": kind, "trainable_params": result["trainable_params"], "size_mb": _size_mb(out_dir / kind),
                     "peak_memory_mb": result["peak_memory_mb"], "train_seconds": result["seconds"],
                     cfg.eval.primary: ci["b"], "diff": ci["diff"], "low": ci["low"], "high": ci["high"]})
    table = {"name": cfg.name, "primary": cfg.eval.primary, "test_rows": len(y), "test_fingerprint": data.test_fingerprint, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(table, indent=2))
    (out_dir / "compare.md").write_text(markdown(table))
    console.print(_rich(table))
    console.print(f"Table: {out_dir / 'compare.md'}")
    return table


def _metric_fn(primary: str, labels: list[str]):
    return lambda y, p: classification_metrics(y, p, labels)[primary]


def _size_mb(adapter_dir: Path) -> float:
    """Weights on disk (the tokenizer and manifest are the same for every method)."""
    return round(sum(p.stat().st_size for p in adapter_dir.glob("*.safetensors")) / 2**20, 2)


def _train_in_child(cfg: TunekitConfig, out_dir: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(cfg.model_dump(mode="json"), str(cfg._source_dir), str(cfg._cwd), str(out_dir), queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise ConfigError(f"method.kind {cfg.method.kind}: {result['error']}")
    return result


def _child(raw: dict, source_dir: str, cwd: str, out_dir: str, queue) -> None:
    """Train one method in a fresh process and report its figures."""
    from tunekit import models, train
    from tunekit.lineage import quiet_libraries

    quiet_libraries()
    try:
        cfg = TunekitConfig.model_validate(raw)
        cfg._source_dir, cfg._cwd = Path(source_dir), Path(cwd)
        data = data_stage.prepare(cfg)
        result = train.run(cfg, data, Path(out_dir))
        probs = models.load_trained(out_dir).predict_proba(list(data.test["text"]), None, cfg.train.eval_batch_size)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put({"trainable_params": result.trainable_params, "seconds": result.seconds, "probs": probs.tolist(),
                   "peak_memory_mb": round(max(peak, result.peak_memory_mb), 1)})
    except Exception as exc:  # reported by the parent with the method's name
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def markdown(table: dict) -> str:
    primary = table["primary"]
    lines = [f"# {table['name']}: adaptation methods on the same {table['test_rows']} test rows", "",
             f"| method | trainable parameters | weights on disk (MB) | peak memory (MB) | train time (s) | test {primary} | vs baseline (95% interval) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['method']} | {_num(r['trainable_params'])} | {_num(r['size_mb'])} | {_num(r['peak_memory_mb'])} | "
                     f"{r['train_seconds']:.1f} | {r[primary]:.4f} | {_versus(r)} |")
    return "\n".join(lines) + "\n\nIntervals: paired bootstrap over the test rows of the difference from the baseline.\n"


def _versus(row: dict) -> str:
    return "" if row["diff"] is None else f"{row['diff']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def _num(value) -> str:
    return "" if value is None else f"{value:,}"


def _rich(table: dict) -> Table:
    primary = table["primary"]
    out = Table(title=f"{table['name']}: methods on {table['test_rows']} test rows")
    for col in ("method", "trainable", "weights MB", "peak MB", "train s", primary, "vs baseline [95%]"):
        out.add_column(col, justify="left" if col == "method" else "right")
    for r in table["rows"]:
        out.add_row(r["method"], _num(r["trainable_params"]), _num(r["size_mb"]), _num(r["peak_memory_mb"]),
                    f"{r['train_seconds']:.1f}", f"{r[primary]:.4f}", _versus(r))
    return out
