"""Benchmark: `tunekit train` vs plain transformers Trainer + PEFT scripts, same data and model.

All train LoRA (r=16, alpha=32, same target modules) on the bundled MiniLM with the same rows,
batch size, learning rate, epochs and max length. Two Trainer scripts:
- `plain_trainer_peft`: Trainer's defaults for everything else (random batches padded per batch by
  DataCollatorWithPadding): what a first script looks like;
- `plain_trainer_grouped`: the strongest plain script on a CPU: `train_sampling_strategy=
  "group_by_length"` (transformers 5's name for length grouping, lengths precomputed in the
  `length` column so the sampler does not re-tokenise), `use_cpu`, no pinned memory, fused AdamW
  (Trainer's default on torch >= 2.8). No bf16: this CPU has no native bf16 (no AVX512-BF16/AMX),
  where autocast only adds casts.
Each side runs in its own process so peak memory (max RSS) is its own, and reports the validation
macro F1 it ends with on the same 500 held-out rows (`tunekit.evaluate.metrics.macro_f1` for all),
so a speed ratio is read at a known score. Prints one JSON line with the figures and the ratios
(tunekit / plain; above 1 for throughput means tunekit is faster); `throughput_ratio_vs_grouped` is
the honest one.

    .venv/bin/python bench/train_classification.py [--rows 2000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    return {"examples_per_second": result.train_examples_per_second, "validation_macro_f1": round(result.best_score, 4)}


def run_plain(args, grouped: bool = False) -> dict:
    import datasets
    import numpy as np
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

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

    best_cpu = {"train_sampling_strategy": "group_by_length", "use_cpu": True, "dataloader_pin_memory": False} if grouped else {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, learning_rate=2e-3,
                                   num_train_epochs=args.epochs, report_to=[], save_strategy="no", disable_tqdm=True, seed=13,
                                   per_device_eval_batch_size=64, **best_cpu),
            train_dataset=encode(rows), data_collator=DataCollatorWithPadding(tok),
        )
        metrics = trainer.train().metrics
        validation = encode(held_out)
        predicted = trainer.predict(validation).predictions.argmax(-1)
    return {"examples_per_second": round(metrics["train_samples_per_second"], 2),
            "validation_macro_f1": round(macro_f1(np.asarray(validation["label"]), predicted), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--sides", default="plain,plain_grouped,tunekit", help="which sides to run (comma-separated); ratios need tunekit")
    parser.add_argument("--side", choices=["tunekit", "plain", "plain_grouped"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # child process: run one side, print its figures
        figures = run_tunekit(args) if args.side == "tunekit" else run_plain(args, grouped=args.side == "plain_grouped")
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
    ratio = {f"throughput_ratio{'' if side == 'plain' else '_vs_grouped'}": round(results["tunekit"]["examples_per_second"] / results[side]["examples_per_second"], 3)
             for side in ("plain", "plain_grouped") if side in results and "tunekit" in results}
    if "plain_grouped" in results and "tunekit" in results:
        ratio["validation_macro_f1_diff_vs_grouped"] = round(results["tunekit"]["validation_macro_f1"] - results["plain_grouped"]["validation_macro_f1"], 4)
    if "plain" in results and "tunekit" in results:
        ratio["peak_memory_ratio"] = round(results["tunekit"]["peak_memory_mb"] / results["plain"]["peak_memory_mb"], 3)
    print(json.dumps({
        "benchmark": "train_classification", "model": "bundled:minilm", "method": "lora", "rows": args.rows,
        "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
        "load_before": load_before, "load_after": os.getloadavg(),
        **{{"plain": "plain_trainer_peft", "plain_grouped": "plain_trainer_grouped"}.get(side, side): r for side, r in results.items()},
        **ratio,
    }))


if __name__ == "__main__":
    main()
