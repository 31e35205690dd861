"""`tunekit compare-methods` for regression and generation (classification is in test_methods.py).

Every method trains in its own spawned process on the same frozen splits as the baseline; the
table has one row per method after the baseline's, the primary metric on the same test rows and
a paired bootstrap interval of method minus baseline.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from tests.test_regression import urgency_rows
from tunekit.pipeline import compare as compare_module
from tunekit.pipeline.compare import compare_methods
from tunekit.config import load_config
from tunekit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# MiniLM (bundled:minilm): 6 blocks, hidden 384, feed-forward 1536
HIDDEN, INTER, LAYERS = 384, 1536, 6
HEAD = HIDDEN + 1  # regression: one output
LORA_R16 = LAYERS * 16 * (4 * 2 * HIDDEN + 2 * (HIDDEN + INTER))
POOLER_LORA_R16 = 16 * 2 * HIDDEN
POOLER = HIDDEN * HIDDEN + HIDDEN
BLOCK = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN + (HIDDEN * INTER + INTER) + (INTER * HIDDEN + HIDDEN) + 2 * HIDDEN


def _write_yaml(folder: Path, raw: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _regression_config(folder: Path) -> Path:
    for name, rows in (("train.csv", urgency_rows(48, 1)), ("test.csv", urgency_rows(24, 2))):
        with (folder / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "score"])
            writer.writerows(rows)
    return _write_yaml(folder, {
        "name": "urgency", "task": "regression", "workspace": str(folder / "ws"),
        "data": {"train": "train.csv", "test": "test.csv", "label_column": "score"},
        "model": {"base": "bundled:minilm", "max_length": 24},
        "train": {"epochs": 1, "batch_size": 16, "early_stopping_patience": 0, "warmup_ratio": 0.0},
        "eval": {"bootstrap_resamples": 200},
    })


def _check_table(table: dict, kinds: list[str], baseline: str) -> dict:
    """The shape every task shares; returns the rows by method."""
    rows = {r["method"]: r for r in table["rows"]}
    assert [r["method"] for r in table["rows"]] == [f"baseline ({baseline})", *kinds]
    primary = table["primary"]
    base = rows[f"baseline ({baseline})"]
    assert base["diff"] is None and base["trainable_params"] is None and math.isfinite(base[primary])
    for kind in kinds:
        r = rows[kind]
        assert math.isfinite(r[primary]), r
        assert r["low"] <= r["diff"] <= r["high"], r
        assert r["diff"] == pytest.approx(r[primary] - base[primary])
        assert r["peak_memory_mb"] > 0 and r["size_mb"] > 0
    return rows


def _written(cfg) -> tuple[dict, str]:
    (folder,) = (cfg.workspace_dir / "compare").iterdir()
    return json.loads((folder / "compare.json").read_text()), (folder / "compare.md").read_text()


def test_regression_methods_against_the_ridge_baseline(tmp_path):
    cfg = load_config(_regression_config(tmp_path))
    table = compare_methods(cfg, ["lora", "freeze"], Console(quiet=True))
    assert table["primary"] == "rmse" and table["lower_is_better"] and table["test_rows"] == 24
    rows = _check_table(table, ["lora", "freeze"], "tfidf-ridge")
    # each method with its default options: LoRA r 16 on every linear layer of MiniLM (and its pooler),
    # freeze the top two blocks and the pooler; both train the one-output head. LoRA saves only its
    # adapter, freeze the whole checkpoint.
    assert rows["lora"]["trainable_params"] == LORA_R16 + POOLER_LORA_R16 + HEAD
    assert rows["freeze"]["trainable_params"] == 2 * BLOCK + POOLER + HEAD
    assert rows["lora"]["size_mb"] < rows["freeze"]["size_mb"]
    written, md = _written(cfg)
    assert written == json.loads(json.dumps(table))
    assert "test rmse" in md and "rmse, lower is better" in md and "a negative difference means the method beats the baseline" in md


def test_generation_methods_against_the_prompted_base_model(tmp_path):
    from tests.generation.conftest import reverse_rows
    from tunekit.models.tiny import build_tiny_llama

    llama = build_tiny_llama(tmp_path / "llama", [r["messages"][0]["content"] for r in reverse_rows(200)], hidden_size=64, layers=2)
    cfg = load_config(_write_yaml(tmp_path, {
        "name": "reverse", "task": "generation", "workspace": str(tmp_path / "ws"),
        "data": {"train": str(ROOT / "examples" / "reverse" / "train.jsonl"), "split": {"validation": 0.1, "test": 0.15, "seed": 3},
                 "max_train_rows": 96},
        "model": {"base": str(llama), "max_length": 48},
        "train": {"epochs": 2, "batch_size": 16, "early_stopping_patience": 0, "checkpoint_every": 0},
        "eval": {"primary": "rouge_l", "max_new_tokens": 8, "k_shot": 1, "max_test_rows": 6, "bootstrap_resamples": 200},
    }))
    table = compare_methods(cfg, ["lora", "full"], Console(quiet=True))
    assert table["primary"] == "rouge_l" and not table["lower_is_better"] and table["test_rows"] == 6
    baseline = next(r["method"] for r in table["rows"])
    assert baseline in {"baseline (base model zero-shot)", "baseline (base model 1-shot)"}
    rows = _check_table(table, ["lora", "full"], baseline.removeprefix("baseline (").removesuffix(")"))
    total, lora_r16 = _count_parameters(llama)
    assert rows["full"]["trainable_params"] == total
    assert rows["lora"]["trainable_params"] == lora_r16 < total // 3
    assert all(0 <= r["rouge_l"] <= 1 for r in table["rows"])
    # each row is the score of what was saved, decoded again here on the same scored rows
    from tunekit.data.conversations import prepare_conversations
    from tunekit.evaluate.generation import score_generator
    from tunekit.models import load_tokenizer, templates
    from tunekit.models.causal import load_generator

    tokenizer = load_tokenizer(cfg.model.base)
    data = prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))
    (folder,) = (cfg.workspace_dir / "compare").iterdir()
    for kind in ("lora", "full"):
        metrics, answers = score_generator(cfg, data, load_generator(folder / kind))
        assert len(answers) == 6 and metrics["rouge_l"] == pytest.approx(rows[kind]["rouge_l"])
    _, md = _written(cfg)
    assert "rouge_l, higher is better" in md and "a positive difference means the method beats the baseline" in md


def _count_parameters(path: Path) -> tuple[int, int]:
    """All weights of the model, and what LoRA r 16 adds on every linear layer of its blocks."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    return sum(p.numel() for p in model.parameters()), sum(16 * (m.in_features + m.out_features) for m in linears)


def test_qlora_is_refused_by_name_before_anything_trains(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    started = []
    monkeypatch.setattr(compare_module, "_reference", lambda *a: started.append("baseline"))
    monkeypatch.setattr(compare_module, "_train_in_child", lambda *a: started.append("train"))
    cfg = load_config(_regression_config(tmp_path))
    with pytest.raises(ConfigError, match=r"--methods qlora: .*qlora needs a CUDA GPU"):
        compare_methods(cfg, ["lora", "qlora"], Console(quiet=True))
    assert started == [] and not (tmp_path / "ws").exists()


def test_peak_memory_is_the_childs_own():
    """A spawned child starts as a fork of the parent, and Linux keeps that fork's size in the
    child's ru_maxrss; the method's figure must not include the parent's memory (here 1.5 GiB)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tunekit.train import rss_high_water_mb

    ballast = b"x" * (1536 * 2**20)  # written, so every page is resident  # noqa: F841
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        child = pool.submit(rss_high_water_mb).result()
    assert 0 < child < 1536, child
    assert rss_high_water_mb() > 1536


def test_a_child_that_dies_without_reporting_is_an_error_not_a_hang():
    import multiprocessing as mp

    from tunekit.pipeline.compare import _wait_for
    from tunekit.errors import TunekitError

    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_exit_hard)
    proc.start()
    with pytest.raises(TunekitError, match=r"lora: its training process exited with code 3"):
        _wait_for(proc, ctx.Queue(), "lora")


def _exit_hard() -> None:
    import os

    os._exit(3)
