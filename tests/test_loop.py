"""The one training loop (``train.loop.fit``), driven by a toy objective and by the real tasks.

The toy is a weighted least-squares problem: each row counts as ``weight`` units (as a generation
row counts as its trained tokens), so the loop's normalisation by the units of the whole
optimisation step is visible in the weights it ends with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from tunekit import data, train
from tunekit.config import load_config
from tunekit.train import loop


class Toy:
    """``loop.Objective`` for y = x·w on 48 rows of unequal weight."""

    shardable = False
    lower_is_better = True
    improvement = "lower validation error"
    fingerprint = "toy"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(48, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(48, generator=g)
        self.w = torch.arange(1, 49, dtype=torch.float32) % 5 + 1  # units per row: 1..5
        self.model = torch.nn.Linear(4, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.device = torch.device("cpu")
        self.lengths = [1] * 48
        self.saved: dict = {}

    def setup(self, par, console) -> None:
        pass

    def count(self, rows) -> int:
        return int(self.w[rows].sum())

    def loss(self, model, rows):
        err = model(self.x[rows]).squeeze(-1) - self.y[rows]
        return (self.w[rows] * err**2).sum(), len(rows)

    def validate(self, par) -> loop.Validation:
        with torch.no_grad():
            mse = float(((par.eval_model(self.x).squeeze(-1) - self.y) ** 2).mean())
        return loop.Validation(score=mse, fields={"val_mse": mse}, line=f"mse {mse:.4f}")

    def save(self, model, out_dir: Path, history, best_epoch, state_dict) -> None:
        self.saved = {"weight": model.weight.detach().clone(), "best_epoch": best_epoch, "history": history}


def _fit(tiny_config, tmp_path, **train_):
    cfg = load_config(tiny_config(train={"epochs": 3, "learning_rate": 0.05, "warmup_ratio": 0.0, "weight_decay": 0.0,
                                         "group_by_length": False, "checkpoint_every": 0, **train_}))
    toy = Toy()
    result = loop.fit(cfg, toy, tmp_path / "adapter", Console(quiet=True))
    return toy, result


def test_accumulating_micro_batches_equals_one_large_batch(tiny_config, tmp_path):
    """Two micro-batches of 8 rows accumulated make the step of one 16-row batch: same batches
    (the same shuffle), the loss divided by the units of the whole step, one schedule step."""
    large, _ = _fit(tiny_config, tmp_path, batch_size=16, gradient_accumulation_steps=1)
    small, _ = _fit(tiny_config, tmp_path, batch_size=8, gradient_accumulation_steps=2)
    torch.testing.assert_close(small.saved["weight"], large.saved["weight"], rtol=1e-5, atol=1e-6)
    # and not the same as taking a step after every micro-batch (twice the steps)
    unaccumulated, _ = _fit(tiny_config, tmp_path, batch_size=8, gradient_accumulation_steps=1)
    assert not torch.allclose(unaccumulated.saved["weight"], large.saved["weight"], atol=1e-3)


def test_the_loop_keeps_the_best_epoch_in_the_objectives_direction(tiny_config, tmp_path):
    toy, result = _fit(tiny_config, tmp_path, batch_size=16, epochs=4)
    scores = [h["val_mse"] for h in result.history]
    assert result.best_epoch == int(np.argmin(scores)) + 1 and result.best_score == min(scores)
    assert scores[-1] < scores[0]  # it learns
    assert toy.saved["best_epoch"] == result.best_epoch and len(toy.saved["history"]) == 4


def test_classification_trains_under_bf16_autocast(tiny_config, tmp_path):
    """``train.precision: bf16`` now reaches classification too: the same seeded epoch gives a
    close but different loss (bf16 matmuls), and a model that still classifies."""
    fp32 = load_config(tiny_config(train={"epochs": 1, "precision": "fp32"}))
    bf16 = load_config(tiny_config(train={"epochs": 1, "precision": "bf16"}))
    prepared = data.prepare(fp32)
    a = train.run(fp32, prepared, tmp_path / "fp32" / "adapter", Console(quiet=True)).history[0]["train_loss"]
    b = train.run(bf16, prepared, tmp_path / "bf16" / "adapter", Console(quiet=True)).history[0]["train_loss"]
    assert a != b
    assert b == pytest.approx(a, rel=0.05)


def test_classification_accumulates_gradients(tiny_config, tmp_path):
    """Half the optimisation steps with two micro-batches each: the progress counts micro-batches,
    the schedule counts steps; training still learns."""
    cfg = load_config(tiny_config(train={"epochs": 6, "batch_size": 4, "gradient_accumulation_steps": 2}))
    result = train.run(cfg, data.prepare(cfg), tmp_path / "adapter", Console(quiet=True))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.8, losses


def test_the_manifest_records_where_a_gguf_base_came_from(tiny_config, tmp_path, monkeypatch):
    """A model trained on ``bundled:smollm2`` says in ``tunekit.json`` that its base was de-quantised
    from a GGUF file (which file, which sha256, from what); other bases record no origin."""
    from types import SimpleNamespace

    from tunekit.artifacts import Manifest
    from tunekit.models import gguf

    cfg = load_config(tiny_config())
    data_ = SimpleNamespace(fingerprint="f" * 64, test_fingerprint="t" * 64)
    assert loop.manifest(cfg, data_, [], 1).base_model.origin is None
    origin = {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "ab" * 32, "quantization": "Q4_1", "dequantized_to": "float32"}
    monkeypatch.setattr(gguf, "base_origin", lambda base: origin)
    loop.manifest(cfg, data_, [], 1, labels=["a"]).write(tmp_path)
    assert Manifest.read(tmp_path).base_model.origin == origin
