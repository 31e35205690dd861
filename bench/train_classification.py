"""Benchmark: `tunekit train` vs a plain transformers Trainer + PEFT script, same data and model.

Both train LoRA (r=16, alpha=32, same target modules) on the bundled MiniLM with the same rows,
batch size, learning rate, epochs and max length. The Trainer script keeps Trainer's defaults for
everything else (random batches padded per batch by DataCollatorWithPadding). Each side runs in its
own process so peak memory (max RSS) is its own. Prints one JSON line with both figures and the
ratios (tunekit / plain; above 1 for throughput means tunekit is faster).

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
    return {"examples_per_second": result.train_examples_per_second}


def run_plain(args) -> dict:
    import datasets
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tunekit.methods.lora import DEFAULT_TARGETS
    from tunekit.models import resolve_base

    rows = _rows(args.rows)
    labels = sorted({r["category"] for r in _rows(args.rows + 500)})
    ids = {name: i for i, name in enumerate(labels)}
    path = resolve_base("bundled:minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=16, lora_alpha=32, lora_dropout=0.1,
                                             target_modules=DEFAULT_TARGETS["bert"]))
    ds = datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "label": [ids[r["category"]] for r in rows]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True, remove_columns=["text"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, learning_rate=2e-3,
                                   num_train_epochs=args.epochs, report_to=[], save_strategy="no", disable_tqdm=True, seed=13),
            train_dataset=ds, data_collator=DataCollatorWithPadding(tok),
        )
        metrics = trainer.train().metrics
    return {"examples_per_second": round(metrics["train_samples_per_second"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--side", choices=["tunekit", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # child process: run one side, print its figures
        figures = run_tunekit(args) if args.side == "tunekit" else run_plain(args)
        figures["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print("RESULT " + json.dumps(figures))
        return
    results = {}
    for side in ("plain", "tunekit"):
        cmd = [sys.executable, __file__, "--side", side, "--rows", str(args.rows), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True).stdout
        results[side] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    print(json.dumps({
        "benchmark": "train_classification", "model": "bundled:minilm", "method": "lora", "rows": args.rows,
        "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
        "tunekit": results["tunekit"], "plain_trainer_peft": results["plain"],
        "throughput_ratio": round(results["tunekit"]["examples_per_second"] / results["plain"]["examples_per_second"], 3),
        "peak_memory_ratio": round(results["tunekit"]["peak_memory_mb"] / results["plain"]["peak_memory_mb"], 3),
    }))


if __name__ == "__main__":
    main()
