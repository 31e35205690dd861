"""Benchmark: one multi-task model against one single-task model per task, on the same rows.

Runs `tunekit run` three times on the data of examples/multitask (BANKING77 intents + SST-2
sentiment; build it first with `python examples/multitask/make_data.py`): once on both tasks with
`data.task_column`, once on each task alone, with the same settings (LoRA on the bundled MiniLM,
examples/multitask/config.yaml). Prints a table and one JSON line: each task's test macro-F1 and
accuracy for the multi-task model and the single-task one, and the cost of each side (training
seconds, weights on disk, models to serve), with ratios multi / single-task total.

    .venv/bin/python bench/multitask.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "multitask" / "config.yaml"
TASKS = ("intent", "sentiment")


def _run(overrides: dict, workspace: Path):
    from rich.console import Console

    from tunekit import pipeline
    from tunekit.config import load_config

    cfg = load_config(CONFIG, {**overrides, "workspace": str(workspace)})
    return pipeline.run(cfg, Console(quiet=True))


def _weights_mb(run_dir: Path) -> float:
    return sum(p.stat().st_size for p in (run_dir / "adapter").glob("*.safetensors")) / 2**20


def _per_task(outcome) -> dict:
    """Test metrics per task (each task's own rows and labels): macro-F1 against the baseline with its
    interval from the card's `tasks` analysis, accuracy from its `task=` slices."""
    accuracy = {s["slice"].split("=", 1)[1]: s["accuracy"] for s in outcome.card["analysis"]["slices"] if s["slice"].startswith("task=")}
    return {task: {"macro_f1": r["b"], "baseline_macro_f1": r["a"], "diff": r["diff"], "low": r["low"], "high": r["high"],
                   "accuracy": accuracy[task]} for task, r in outcome.card["analysis"]["tasks"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "tunekit-workspace" / "multitask-data")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        raise SystemExit(f"{args.data}: no data; run `python examples/multitask/make_data.py` first")
    common = {"train.epochs": args.epochs, "eval.robustness_sample": 0, "eval.explain_samples": 0, "eval.label_noise": False}
    with tempfile.TemporaryDirectory() as tmp:
        multi = _run({**common, "data.train": str(args.data / "train.csv"), "data.test": str(args.data / "test.csv")}, Path(tmp) / "multi")
        single = {}
        for task in TASKS:
            single[task] = _run({**common, "name": f"{task}-only", "data.task_column": None,
                                 "data.train": str(args.data / f"train-{task}.csv"), "data.test": str(args.data / f"test-{task}.csv")},
                                Path(tmp) / task)
        per_task = _per_task(multi)
        result = {"tasks": {}, "multi": {"train_seconds": multi.card["train"]["seconds"], "weights_mb": _weights_mb(multi.run_dir), "models": 1},
                  "single": {"train_seconds": sum(s.card["train"]["seconds"] for s in single.values()),
                             "weights_mb": sum(_weights_mb(s.run_dir) for s in single.values()), "models": len(TASKS)}}
        for task in TASKS:
            m = single[task].card["model"]["metrics"]
            result["tasks"][task] = {"multi": per_task[task], "single": {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}}
    result["ratio_train_seconds"] = result["multi"]["train_seconds"] / result["single"]["train_seconds"]
    result["ratio_weights"] = result["multi"]["weights_mb"] / result["single"]["weights_mb"]
    print("| task | multi-task macro-F1 | single-task macro-F1 | multi-task accuracy | single-task accuracy | TF-IDF baseline macro-F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for task, r in result["tasks"].items():
        print(f"| {task} | {r['multi']['macro_f1']:.4f} | {r['single']['macro_f1']:.4f} | {r['multi']['accuracy']:.4f} | "
              f"{r['single']['accuracy']:.4f} | {r['multi']['baseline_macro_f1']:.4f} |")
    print(f"training: {result['multi']['train_seconds']:.0f} s for one model against {result['single']['train_seconds']:.0f} s for "
          f"{len(TASKS)} (ratio {result['ratio_train_seconds']:.2f}); weights {result['multi']['weights_mb']:.1f} MB against "
          f"{result['single']['weights_mb']:.1f} MB (ratio {result['ratio_weights']:.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
