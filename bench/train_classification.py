"""Benchmark: `tunekit train` vs plain transformers Trainer + PEFT scripts, same data and model.

All train LoRA (r=16, alpha=32, same target modules) on the bundled MiniLM with the same rows,
batch size, learning rate, epochs and max length. Three Trainer scripts:
- `plain_trainer_peft`: Trainer's defaults for everything else (random batches padded per batch by
  DataCollatorWithPadding): what a first script looks like;
- `plain_trainer_grouped`: the strongest plain script on a CPU: `train_sampling_strategy=
  "group_by_length"` (transformers 5's name for length grouping, lengths precomputed in the
  `length` column so the sampler does not re-tokenise), `use_cpu`, no pinned memory, fused AdamW
  (Trainer's default on torch >= 2.8). No bf16: this CPU has no native bf16 (no AVX512-BF16/AMX),
  where autocast only adds casts.
- `plain_trainer_grouped_head_lr`: the same, with tunekit's recipe written by hand: an AdamW with two
  parameter groups, the new classification head at 5x the learning rate (`train.head_learning_rate`'s
  default). It shows how much of tunekit's lead is the recipe rather than the loop.
Each side runs in its own process so peak memory (max RSS) is its own, and is scored after every
epoch on the same 500 held-out rows (`tunekit.evaluate.metrics.macro_f1` for all); each epoch's
training seconds exclude that evaluation. Prints one JSON line with each side's figures and learning
curve, and per plain side (`ratios.vs_...`): the throughput ratio (training examples per training
second, tunekit / plain: above 1 means tunekit is faster), the final score difference, and the time
to an equal score (the lower of the two best epoch scores; plain seconds / tunekit seconds), which is
the speed at equal final validation score that matters.

    .venv/bin/python bench/train_classification.py [--rows 2000] [--epochs 6] [--sides tunekit,plain_grouped,plain_grouped_head_lr]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN = {"plain": "plain_trainer_peft", "plain_grouped": "plain_trainer_grouped", "plain_grouped_head_lr": "plain_trainer_grouped_head_lr"}
DATA = ROOT / "examples" / "banking77" / "data"


def _rows(n: int):
    import csv
    import random

    with open(DATA / "train.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(0).shuffle(rows)
    return rows[:n]


def run_tunekit(args) -> dict:
    from types import SimpleNamespace

    import datasets

    from tunekit import train
    from tunekit.config import TunekitConfig

    rows = _rows(args.rows + 500)
    labels = sorted({r["category"] for r in rows})
    ids = {name: i for i, name in enumerate(labels)}

    def ds(part):
        return datasets.Dataset.from_dict({"id": [str(i) for i in range(len(part))], "text": [r["text"] for r in part],
                                           "label": [ids[r["category"]] for r in part]})

    data = SimpleNamespace(train=ds(rows[: args.rows]), validation=ds(rows[args.rows :]), test=None, labels=labels,
                           fingerprint="bench", test_fingerprint="bench")
    cfg = TunekitConfig.model_validate({
        "name": "bench", "data": {"train": "unused.csv"}, "model": {"max_length": args.max_length},
        "method": {"kind": "lora", "r": 16, "alpha": 32},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": 2e-3, "early_stopping_patience": 0},
    })
    with tempfile.TemporaryDirectory() as tmp:
        result = train.run(cfg, data, Path(tmp) / "adapter")
    curve = _curve([h["train_seconds"] for h in result.history], [h["val_macro_f1"] for h in result.history])
    return {"examples_per_second": result.train_examples_per_second, "validation_macro_f1": curve[-1]["validation_macro_f1"],
            "curve": curve}


def _curve(epoch_seconds: list[float], scores: list[float]) -> list[dict]:
    """Per epoch: training seconds so far (validation excluded) and the validation macro-F1 it ends with."""
    total, out = 0.0, []
    for epoch, (seconds, score) in enumerate(zip(epoch_seconds, scores), 1):
        total += seconds
        out.append({"epoch": epoch, "train_seconds": round(total, 2), "validation_macro_f1": round(float(score), 4)})
    return out


def run_plain(args, grouped: bool = False, head_lr: bool = False) -> dict:
    import datasets
    import numpy as np
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from tunekit.evaluate.metrics import macro_f1
    from tunekit.methods.lora import DEFAULT_TARGETS
    from tunekit.models import resolve_base

    every = _rows(args.rows + 500)
    rows, held_out = every[: args.rows], every[args.rows :]
    labels = sorted({r["category"] for r in every})
    ids = {name: i for i, name in enumerate(labels)}
    path = resolve_base("bundled:minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=16, lora_alpha=32, lora_dropout=0.1,
                                             target_modules=DEFAULT_TARGETS["bert"]))

    def encode(part):
        ds = datasets.Dataset.from_dict({"text": [r["text"] for r in part], "label": [ids[r["category"]] for r in part]})
        ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True, remove_columns=["text"])
        return ds.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True) if grouped else ds

    class EpochClock(TrainerCallback):
        """Each epoch's training seconds, from its start to its end: the evaluation that follows is not counted."""

        def __init__(self):
            self.seconds: list[float] = []
            self.began = 0.0

        def on_epoch_begin(self, *_, **__):
            self.began = time.perf_counter()

        def on_epoch_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self.began)

    best_cpu = {"train_sampling_strategy": "group_by_length", "use_cpu": True, "dataloader_pin_memory": False} if grouped else {}
    validation = encode(held_out)
    clock = EpochClock()
    optimizers = (None, None)
    if head_lr:  # tunekit's recipe by hand: the new head at 5x the rate (Trainer makes its linear schedule over both groups)
        import torch

        head = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
        rest = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
        optimizers = (torch.optim.AdamW([{"params": rest, "lr": 2e-3}, {"params": head, "lr": 1e-2}], lr=2e-3, weight_decay=0.0,
                                        fused=True), None)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, learning_rate=2e-3,
                                   num_train_epochs=args.epochs, report_to=[], save_strategy="no", disable_tqdm=True, seed=13,
                                   per_device_eval_batch_size=64, eval_strategy="epoch", **best_cpu),
            train_dataset=encode(rows), eval_dataset=validation, data_collator=DataCollatorWithPadding(tok), callbacks=[clock],
            compute_metrics=lambda p: {"macro_f1": macro_f1(np.asarray(p.label_ids), p.predictions.argmax(-1))},
            optimizers=optimizers,
        )
        trainer.train()
    scores = [h["eval_macro_f1"] for h in trainer.state.log_history if "eval_macro_f1" in h]
    curve = _curve(clock.seconds, scores)
    # training examples over training seconds (Trainer's own train_samples_per_second counts the evaluations too)
    return {"examples_per_second": round(len(rows) * args.epochs / sum(clock.seconds), 2),
            "validation_macro_f1": curve[-1]["validation_macro_f1"], "curve": curve}


def time_to_score(tunekit: list[dict], plain: list[dict]) -> dict:
    """Time to an equal validation score: the target is the lower of the two sides' best epoch scores, so both
    reach it; each side's time is its training seconds up to the first epoch at or above it. The ratio
    (plain / tunekit; above 1 means tunekit gets there sooner) is the speed that counts at an equal score."""
    target = min(max(p["validation_macro_f1"] for p in tunekit), max(p["validation_macro_f1"] for p in plain))

    def reach(curve):
        return next(p for p in curve if p["validation_macro_f1"] >= target)

    t, p = reach(tunekit), reach(plain)
    return {"target_macro_f1": target, "tunekit_seconds": t["train_seconds"], "tunekit_epochs": t["epoch"],
            "plain_seconds": p["train_seconds"], "plain_epochs": p["epoch"], "ratio": round(p["train_seconds"] / t["train_seconds"], 3)}


def versus(tunekit: dict, plain: dict) -> dict:
    """tunekit against one plain side: throughput (above 1: tunekit faster), final score, time to an equal score, memory."""
    return {"throughput_ratio": round(tunekit["examples_per_second"] / plain["examples_per_second"], 3),
            "validation_macro_f1_diff": round(tunekit["validation_macro_f1"] - plain["validation_macro_f1"], 4),
            "time_to_score": time_to_score(tunekit["curve"], plain["curve"]),
            "peak_memory_ratio": round(tunekit["peak_memory_mb"] / plain["peak_memory_mb"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--sides", default="tunekit,plain_grouped,plain_grouped_head_lr", help="which sides to run (comma-separated); ratios need tunekit")
    parser.add_argument("--side", choices=["tunekit", *PLAIN], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # child process: run one side, print its figures
        figures = run_tunekit(args) if args.side == "tunekit" else run_plain(args, grouped=args.side != "plain",
                                                                              head_lr=args.side == "plain_grouped_head_lr")
        figures["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print("RESULT " + json.dumps(figures))
        return
    results = {}
    load_before = os.getloadavg()
    for side in args.sides.split(","):
        cmd = [sys.executable, __file__, "--side", side, "--rows", str(args.rows), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True).stdout
        results[side] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    ratios = {f"vs_{PLAIN[side]}": versus(results["tunekit"], results[side]) for side in results if side in PLAIN and "tunekit" in results}
    print(json.dumps({
        "benchmark": "train_classification", "model": "bundled:minilm", "method": "lora", "rows": args.rows,
        "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
        "load_before": load_before, "load_after": os.getloadavg(),
        **{PLAIN.get(side, side): r for side, r in results.items()}, "ratios": ratios,
    }))


if __name__ == "__main__":
    main()
