"""Benchmark: `tunekit train` (generation) vs a plain TRL `SFTTrainer` script, same data and model.

Both sides fine-tune the same model for one epoch on the same mixed-length conversations (the Alpaca
demo rows in ``../shared/data`` when present, else synthetic chats of widely varying length), with the
same batch size (examples per step), learning rate, max length, LoRA settings (r=16, alpha=32, dropout
0.1, all linear layers) and torch threads. ``--model tiny`` (the default) is a tiny random-weight Llama
built here with ``models.tiny``, rendered with ChatML on both sides; ``--model smollm2`` is tunekit's
bundled SmolLM2-135M-Instruct (``model.base: bundled:smollm2``; TRL loads the converted folder that
``tunekit.models.resolve_base`` returns), rendered on both sides with the tokenizer's own chat template
(tunekit: ``model.template: auto``).

TRL unpacked (``--no-trl-packing``, the default for ``tiny``): SFTTrainer's defaults for everything that
decides how examples become batches: random order, each batch right-padded to its longest example, no
packing, no padding-free. TRL packed (``--trl-packing``, the default for ``smollm2``): its best CPU
settings, ``packing=True, packing_strategy="bfd"`` (best-fit decreasing over the whole dataset into
sequences of at most ``max_length`` tokens, overflow truncated), which turns ``padding_free`` on: each
step's packed sequences are flattened into one row with restarting position ids, so no token is padding.
tunekit packs differently: each step takes ``batch_size`` examples and packs them first-fit decreasing
into rows of ``max_length`` tokens. Steps are matched by tokens, not by rows: TRL gets
``round(batch_size x packed sequences / examples)`` packed sequences per step, which gives (up to that
rounding) the same number of optimiser steps and so the same tokens per step as tunekit; both sides
report ``steps`` and ``tokens_per_step``. Two TRL defaults that have nothing to do with batching are
matched to tunekit in both modes, because leaving them would measure something else:
``gradient_checkpointing`` (TRL: on, tunekit: off; recomputing activations costs about a third) and
``bf16`` (TRL: on; tunekit trains fp32 on CPU). ``--trl-defaults`` keeps them as TRL ships them.

Throughput is measured the same way on both sides: real (non-padding) tokens of the training
examples processed, divided by the wall time of the training loop alone (model loading,
tokenisation and validation excluded; collation, forward, backward and optimiser steps included).
tunekit's ``TrainResult.train_tokens_per_second`` is exactly that: its clock runs from the start of
each epoch to the end of its last step, and the per-epoch validation comes after the clock stops.
For TRL a callback times ``on_train_begin`` to ``on_train_end`` (tokenisation and packing happen
earlier, in ``SFTTrainer.__init__``). Each side runs in its own process; ``--repeat`` alternates them
and keeps each side's fastest run, for busy machines.

Against the machine's limit: on a CPU that is float32 matmul throughput, measured in the same run
(``torch.mm`` of two 2048 x 2048 fp32 matrices on the same torch threads, 3 warm-ups, the fastest of
8 timed runs, FLOP/s = 2 n^3 / t; measured before and after the training runs, the higher counts:
``matmul_gflops``). Each side's achieved FLOP/s = tokens/s x ``flops_per_token``, estimated from the
parameter counts: N = the weights of every ``nn.Linear`` of the base (LM head included, tied or not;
the embedding lookup is free), T = trainable LoRA weights. Full fine-tuning: 6N. LoRA: 2N forward +
2N backward through the frozen weights (activation gradients only) + 6T for the adapters = 4N + 6T.
Attention's sequence-length term is left out, so the fraction is a slight underestimate for both
(and TRL's padding-free row, one causal mask over all of a step's packed tokens, spends attention
compute this formula does not count). ``fraction_of_matmul`` = achieved / ``matmul_gflops``.

Prints one JSON line; ``ratio`` above 1 means tunekit is faster.

    .venv/bin/python bench/train_generation.py [--rows 256] [--method lora|full] [--quick]
    .venv/bin/python bench/train_generation.py --model smollm2 --rows 64 --repeat 2   # TRL packed; ~10 min on 2 cores
    .venv/bin/python bench/train_generation.py --model smollm2 --no-trl-packing      # TRL unpacked
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_demo" / "alpaca_en_demo.json"
SMOLLM2 = "bundled:smollm2"
HELD_OUT = 16  # validation and test rows each: tunekit needs them, neither side trains on them
LEARNING_RATE = {"lora": 2e-3, "full": 1e-4}  # tunekit's defaults per method, used by both sides


def _source_rows(n: int) -> tuple[str, list[dict]]:
    """``n`` training rows plus held-out rows, as Alpaca objects or chat objects, and which data it is."""
    if ALPACA.is_file():
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))
        random.Random(0).shuffle(rows)
        if len(rows) >= n + 2 * HELD_OUT:
            return "alpaca_demo", rows[: n + 2 * HELD_OUT]
    return "synthetic", _synthetic(n + 2 * HELD_OUT)


def _synthetic(n: int) -> list[dict]:
    """Chats whose lengths spread over two orders of magnitude (log-uniform), like real SFT data."""
    rng = random.Random(0)
    words = ["the", "a", "model", "data", "train", "token", "batch", "loss", "answer", "question", "short", "long", "list",
             "value", "step", "because", "when", "which", "every", "first", "last", "number", "text", "reads", "writes"]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(int(lo * (hi / lo) ** rng.random())))

    return [{"messages": [{"role": "user", "content": f"{i}: " + text(4, 80)}, {"role": "assistant", "content": text(3, 400)}]}
            for i in range(n)]


def _model_dir(args, tmp: Path) -> Path:
    """The Hugging Face folder both sides load: the tiny model built here, or SmolLM2's converted cache folder."""
    if args.model == "smollm2":
        from tunekit.models import resolve_base

        return Path(resolve_base(SMOLLM2))  # converts the bundled GGUF once; later calls only check the cache
    return tmp / "model"


def _setup(args, tmp: Path) -> tuple[str, Path]:
    """Write the data files and (tiny) the model once; both sides read them."""
    from transformers.utils import logging

    from tunekit.models.tiny import build_tiny_llama

    logging.disable_progress_bar()

    kind, rows = _source_rows(args.rows)
    parts = {"train": rows[: args.rows], "validation": rows[args.rows : args.rows + HELD_OUT], "test": rows[args.rows + HELD_OUT :]}
    for name, part in parts.items():
        (tmp / f"{name}.json").write_text(json.dumps(part), encoding="utf-8")
    texts = [" ".join(str(v) for v in r.values()) if kind == "alpaca_demo" else " ".join(m["content"] for m in r["messages"])
             for r in rows]
    if args.model == "tiny":
        build_tiny_llama(tmp / "model", texts, hidden_size=args.hidden, layers=args.layers, vocab_size=args.vocab)
    return kind, _model_dir(args, tmp)


def _config(args, tmp: Path, kind: str):
    from tunekit.config import TunekitConfig

    return TunekitConfig.model_validate({
        "name": "bench", "task": "generation", "workspace": str(tmp / "workspace"),
        "data": {"train": str(tmp / "train.json"), "validation": str(tmp / "validation.json"), "test": str(tmp / "test.json"),
                 "layout": "alpaca" if kind == "alpaca_demo" else "chat", "overlength": "truncate"},
        "model": {"base": SMOLLM2 if args.model == "smollm2" else str(tmp / "model"), "max_length": args.max_length,
                  "template": "auto" if args.model == "smollm2" else "chatml"},
        "method": {"kind": args.method},
        "train": {"epochs": 1, "batch_size": args.batch_size, "learning_rate": LEARNING_RATE[args.method],
                  "early_stopping_patience": 0, "checkpoint_every": 0, "device": "cpu"},
    })


def _prepared(args, tmp: Path, kind: str):
    """tunekit's frozen, encoded splits (both sides train on its ``train`` rows)."""
    from tunekit.data.conversations import prepare_conversations
    from tunekit.models import load_tokenizer, templates

    cfg = _config(args, tmp, kind)
    tokenizer = load_tokenizer(cfg.model.base)
    return cfg, prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))


def run_tunekit(args, tmp: Path, kind: str) -> dict:
    import numpy as np
    from rich.console import Console

    from tunekit import train
    from tunekit.models.packing import pack
    from tunekit.train.batching import batch_order

    cfg, data = _prepared(args, tmp, kind)
    with open(os.devnull, "w") as null:
        result = train.run(cfg, data, tmp / "tunekit-out" / "adapter", console=Console(file=null))
    # The padding of the epoch just trained, recomputed: the loop's RNG is seeded with train.seed and
    # draws nothing before this batch order, and each batch is packed into rows of max_length tokens.
    lengths = [len(e.ids) for e in data.encoded["train"]]
    real = cells = steps = 0
    for idx in batch_order(lengths, cfg.train.batch_size, np.random.default_rng(cfg.train.seed), cfg.train.group_by_length):
        rows = pack([lengths[i] for i in idx], cfg.model.max_length)
        cells += len(rows) * max(sum(lengths[idx[i]] for i in row) for row in rows)
        real += sum(lengths[i] for i in idx)
        steps += 1
    return {"tokens_per_s": result.train_tokens_per_second, "train_tokens": sum(lengths), "examples": len(lengths),
            "train_seconds": round(sum(lengths) / result.train_tokens_per_second, 2), "padding_fraction": round(1 - real / cells, 3),
            "train_loss": round(result.history[-1]["train_loss"], 4), "val_loss": round(result.history[-1]["val_loss"], 4),
            "params": result.total_params - (result.trainable_params if args.method == "lora" else 0),
            "trainable_params": result.trainable_params, "steps": steps, "examples_per_step": cfg.train.batch_size,
            "tokens_per_step": round(sum(lengths) / steps, 1)}


def run_trl(args, tmp: Path, kind: str) -> dict:
    import datasets
    import torch
    import transformers
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunekit.models import templates

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    _, data = _prepared(args, tmp, kind)  # only for the rows: TRL tokenises them itself
    messages = [[{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in data.rows["train"]]
    model_dir = _model_dir(args, tmp)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if args.model == "tiny":  # the tiny tokenizer has none; tunekit renders with ChatML too
        tokenizer.chat_template = templates.NAMED["chatml"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_config = (LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.1, target_modules="all-linear")
                   if args.method == "lora" else None)
    matched = {} if args.trl_defaults else {"gradient_checkpointing": False, "bf16": False}
    if args.trl_packing:  # TRL's best CPU settings: BFD packing, which turns padding-free on by itself
        matched |= {"packing": True, "packing_strategy": "bfd", "padding_free": True}

    class Clock(TrainerCallback):
        """Times the training loop: from before the first batch to after the last optimiser step."""

        def on_train_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_train_end(self, *a, **k):
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir=str(tmp / "trl-out"), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
                       learning_rate=LEARNING_RATE[args.method], max_length=args.max_length, report_to=[], logging_steps=10,
                       save_strategy="no", use_cpu=True, disable_tqdm=True, seed=13, **matched),
        train_dataset=datasets.Dataset.from_dict({"messages": messages}),
        processing_class=tokenizer, peft_config=peft_config, callbacks=[clock],
    )
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]  # packed: one per packed sequence
    examples, per_step = len(messages), args.batch_size
    if args.trl_packing:
        # The same tokens per optimiser step as tunekit's batch_size examples: as many packed sequences per
        # step as make the same number of steps (batch_size x packed sequences / examples, rounded).
        per_step = max(1, round(args.batch_size * len(lengths) / examples))
        trainer.args.per_device_train_batch_size = per_step
        trainer._train_batch_size = trainer.args.train_batch_size
    collate, counts = trainer.data_collator, {"real": 0, "cells": 0}

    def counting(features):  # measures only: the batch passes through unchanged
        batch = collate(features)
        counts["real"] += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        counts["cells"] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting
    metrics = trainer.train().metrics
    seconds = clock.seconds
    return {"tokens_per_s": round(sum(lengths) / seconds, 1), "train_tokens": sum(lengths), "examples": examples,
            "train_seconds": round(seconds, 2), "train_runtime": round(metrics["train_runtime"], 2),
            "padding_fraction": round(1 - counts["real"] / max(counts["cells"], 1), 3),
            "train_loss": round(metrics["train_loss"], 4), "gradient_checkpointing": trainer.args.gradient_checkpointing,
            "bf16": trainer.args.bf16, "packing": trainer.args.packing, "padding_free": trainer.padding_free,
            "packed_sequences": len(lengths) if args.trl_packing else None, "per_device_train_batch_size": per_step,
            "steps": trainer.state.global_step, "tokens_per_step": round(sum(lengths) / max(trainer.state.global_step, 1), 1),
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}


def _run_side(side: str, args, tmp: str, kind: str) -> dict:
    """One side in a fresh process; its figures from the line it prints last."""
    cmd = [sys.executable, __file__, "--side", side, "--tmp", tmp, "--data-kind", kind, "--rows", str(args.rows),
           "--method", args.method, "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
           "--hidden", str(args.hidden), "--layers", str(args.layers), "--vocab", str(args.vocab), "--threads", str(args.threads)]
    cmd += ["--model", args.model, "--trl-packing" if args.trl_packing else "--no-trl-packing"]
    cmd += ["--trl-defaults"] * args.trl_defaults
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        sys.exit(f"{side} side failed:\n{proc.stderr[-4000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines()[::-1] if line.startswith("RESULT "))[7:])


def matmul_gflops(threads: int, n: int = 2048, warmup: int = 3, runs: int = 8) -> float:
    """This machine's float32 matmul throughput on ``threads`` torch threads: ``torch.mm`` of two n x n
    matrices, ``warmup`` untimed runs, then the fastest of ``runs`` (FLOP/s = 2 n^3 / t), in GFLOP/s."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(warmup):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return round(2 * n**3 / best / 1e9, 1)


def matmul_params(model_dir: Path) -> int:
    """Weights the model multiplies each token by: every ``nn.Linear`` (the LM head included, also when it
    is tied to the embedding, whose lookup costs no multiplications); norms and biases are negligible."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(method: str, frozen: int, trainable: int) -> int:
    """Training FLOPs per token from the parameter counts (attention's sequence-length term left out).

    Full fine-tuning: 6N (2N forward, 4N backward: activation and weight gradients). LoRA: 2N forward and
    2N backward through the frozen weights (activation gradients only), plus 6T for the adapters' own
    T trainable weights."""
    return 6 * frozen if method == "full" else 4 * frozen + 6 * trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny",
                        help="tiny: a random-weight Llama built here; smollm2: the bundled SmolLM2-135M-Instruct")
    parser.add_argument("--rows", type=int, default=256, help="training conversations (same rows on both sides)")
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per optimisation step (TRL's default is 8)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512, help="vocabulary of the tiny tokenizer (larger: fewer tokens per example)")
    # One thread by default: on a small shared machine two threads spin-wait whenever anything else runs and
    # swing 4x from run to run (measured on 2 busy cores), which drowns the difference being measured.
    parser.add_argument("--threads", type=int, default=1, help="torch threads on each side (and for the matmul limit)")
    parser.add_argument("--trl-packing", action=argparse.BooleanOptionalAction, default=None,
                        help="TRL with packing=True (BFD, padding-free), its best CPU settings (default: on for smollm2)")
    parser.add_argument("--trl-defaults", action="store_true", help="keep TRL's gradient checkpointing and bf16 defaults")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side, alternating; the fastest counts (for busy machines)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 rows, a smaller model")
    parser.add_argument("--side", choices=["tunekit", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--data-kind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_packing is None:
        args.trl_packing = args.model == "smollm2"
    if args.quick:
        args.rows, args.hidden, args.layers = 64, 128, 2
    if args.side:  # child process: one side, its figures on the last line
        import torch

        torch.set_num_threads(args.threads)
        side = run_tunekit if args.side == "tunekit" else run_trl
        print("RESULT " + json.dumps(side(args, Path(args.tmp), args.data_kind)))
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        kind, model_dir = _setup(args, tmp)
        frozen = matmul_params(model_dir)
        limits = [matmul_gflops(args.threads)]  # measured before and after the runs; the higher counts
        runs: dict[str, list[dict]] = {"trl": [], "tunekit": []}
        for rep in range(args.repeat):  # alternate which side goes first; keep each side's fastest run
            for side in ("trl", "tunekit")[:: 1 if rep % 2 == 0 else -1]:
                runs[side].append(_run_side(side, args, name, kind))
        limits.append(matmul_gflops(args.threads))
    results = {side: max(rs, key=lambda r: r["tokens_per_s"]) for side, rs in runs.items()}
    tk, trl = results["tunekit"], results["trl"]
    limit = max(limits)
    for r in (tk, trl):
        r["flops_per_token"] = flops_per_token(args.method, frozen, r["trainable_params"] if args.method == "lora" else 0)
        r["achieved_gflops"] = round(r["tokens_per_s"] * r["flops_per_token"] / 1e9, 2)
        r["fraction_of_matmul"] = round(r["achieved_gflops"] / limit, 3)
    model = ({"name": "SmolLM2-135M-Instruct", "base": SMOLLM2} if args.model == "smollm2"
             else {"name": "tiny", "hidden": args.hidden, "layers": args.layers, "vocab": args.vocab})
    print(json.dumps({
        "bench": "train_generation", "data": kind, "rows": args.rows, "method": args.method,
        "model": {**model, "params": tk.pop("params"), "matmul_params": frozen},
        "batch_size": args.batch_size, "max_length": args.max_length, "epochs": 1, "trl_packing": args.trl_packing,
        "tunekit_tokens_per_s": tk["tokens_per_s"], "trl_tokens_per_s": trl["tokens_per_s"],
        "ratio": round(tk["tokens_per_s"] / trl["tokens_per_s"], 3),
        "matmul_gflops": limit, "matmul_gflops_runs": limits,
        "flops_per_token": {"formula": "6N" if args.method == "full" else "4N + 6T", "N": frozen,
                            "T": tk["trainable_params"] if args.method == "lora" else 0, "tunekit": tk["flops_per_token"],
                            "trl": trl["flops_per_token"]},
        "tunekit_achieved_gflops": tk["achieved_gflops"], "trl_achieved_gflops": trl["achieved_gflops"],
        "tunekit_fraction_of_matmul": tk["fraction_of_matmul"], "trl_fraction_of_matmul": trl["fraction_of_matmul"],
        "tunekit_padding_fraction": tk["padding_fraction"], "trl_padding_fraction": trl["padding_fraction"],
        "torch_threads": args.threads, "device": "cpu", "repeat": args.repeat,
        "all_tokens_per_s": {side: [r["tokens_per_s"] for r in rs] for side, rs in runs.items()}, "tunekit": tk, "trl": trl,
    }))


if __name__ == "__main__":
    main()
