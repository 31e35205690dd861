"""Train stage on the tiny BERT: it learns, keeps the best epoch, and writes a standard adapter."""

import json

import numpy as np
import pytest
import torch

from tunekit import data, evaluate, train
from tunekit.config import load_config
from tunekit.models import load_trained


@pytest.fixture
def trained(tiny_config, tmp_path):
    cfg = load_config(tiny_config())
    prepared = data.prepare(cfg)
    return cfg, prepared, train.run(cfg, prepared, tmp_path / "adapter")


def test_lora_learns_the_task_and_saves_a_standard_adapter(trained):
    cfg, prepared, result = trained
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.7, losses
    # each epoch's training time leaves its validation out (what bench/train_classification.py's time-to-score reads)
    assert all(0 < h["train_seconds"] < h["seconds"] for h in result.history), result.history
    assert result.best_score > 0.8  # three separable intents
    assert result.trainable_params < result.total_params / 2
    files = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tunekit.json", "tokenizer.json"} <= files
    manifest = json.loads((result.adapter_dir / "tunekit.json").read_text())
    assert manifest["labels"] == prepared.labels == ["card", "refund", "transfer"]
    assert manifest["data_fingerprint"] == prepared.fingerprint
    assert manifest["config"]["method"]["r"] == 8 and manifest["best_epoch"] == result.best_epoch


def test_adapter_loads_with_plain_peft_and_matches_tunekit(trained):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg, prepared, result = trained
    model = load_trained(result.adapter_dir)
    texts = list(prepared.test["text"])[:6]
    ours = model.predict_proba(texts)
    base = AutoModelForSequenceClassification.from_pretrained(cfg.model.base, num_labels=3)
    plain = PeftModel.from_pretrained(base, result.adapter_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.adapter_dir)
    with torch.no_grad():
        theirs = torch.softmax(plain(**tok(texts, padding=True, return_tensors="pt")).logits, -1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_best_epoch_is_what_is_saved(trained):
    cfg, prepared, result = trained
    metrics, _ = evaluate.score(load_trained(result.adapter_dir), type("D", (), {"test": prepared.validation, "labels": prepared.labels})())
    assert metrics[cfg.eval.primary] == pytest.approx(result.best_score, abs=1e-9)


def test_training_is_seeded(tiny_config, tmp_path):
    cfg = load_config(tiny_config(train={"epochs": 1}))
    prepared = data.prepare(cfg)
    a = train.run(cfg, prepared, tmp_path / "a").history[0]["train_loss"]
    b = train.run(cfg, prepared, tmp_path / "b").history[0]["train_loss"]
    assert a == pytest.approx(b, rel=1e-6)


def test_full_fine_tuning_trains_every_weight(tiny_config, tmp_path):
    cfg = load_config(tiny_config(method={"kind": "full"}, train={"epochs": 2, "learning_rate": 5e-3}))
    prepared = data.prepare(cfg)
    result = train.run(cfg, prepared, tmp_path / "full")
    assert result.trainable_params == result.total_params
    assert (result.adapter_dir / "model.safetensors").exists()
    assert load_trained(result.adapter_dir).predict_proba(["where is my new card"]).shape == (1, 3)


def test_early_stopping(tiny_config, tmp_path):
    # a learning rate of ~0 never improves after epoch 1, so patience 1 stops at epoch 2
    cfg = load_config(tiny_config(train={"epochs": 6, "learning_rate": 1e-12, "early_stopping_patience": 1}))
    result = train.run(cfg, data.prepare(cfg), tmp_path / "es")
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1


def test_init_from_an_earlier_adapter_transfers_its_weights(tiny_config, tmp_path, trained):
    from tunekit.errors import TunekitError

    cfg, prepared, result = trained
    # continue training the same task for a single tiny step: it starts where the first run ended
    cont = load_config(tiny_config(model={"init_from": str(result.adapter_dir)}, train={"epochs": 1, "learning_rate": 1e-9,
                                                                                        "head_learning_rate": 1e-9}))
    again = train.run(cont, data.prepare(cont), tmp_path / "cont")
    texts = list(prepared.test["text"])
    np.testing.assert_allclose(load_trained(tmp_path / "cont").predict_proba(texts),
                               load_trained(result.adapter_dir).predict_proba(texts), atol=1e-4)
    assert again.best_score == pytest.approx(result.best_score, abs=0.1)
    other = load_config(tiny_config(model={"init_from": str(result.adapter_dir)}, method={"kind": "lora", "r": 4}))
    with pytest.raises(TunekitError, match="was trained with method"):
        train.run(other, data.prepare(other), tmp_path / "other")


def test_label_smoothing_matches_torch_and_stays_finite_within_one_task():
    """``train.label_smoothing``: torch's own smoothing on one task; on a multi-task row (other tasks'
    logits -inf) the same loss as on the row's own task's logits alone, not infinity."""
    from tunekit.train.labelled import smoothed_cross_entropy

    torch.manual_seed(0)
    logits, y = torch.randn(5, 6), torch.tensor([0, 3, 5, 2, 1])
    torch.testing.assert_close(smoothed_cross_entropy(logits, y, 0.1),
                               torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1, reduction="sum"))
    assert not torch.isclose(smoothed_cross_entropy(logits, y, 0.1), smoothed_cross_entropy(logits, y, 0.0))
    masked = logits.clone()
    masked[:, 3:] = float("-inf")  # rows of the first task: labels 0-2 only
    first = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(smoothed_cross_entropy(masked, first, 0.1),
                               torch.nn.functional.cross_entropy(logits[:, :3], first, label_smoothing=0.1, reduction="sum"))


def test_linear_probe_head_init_starts_the_model_at_the_probes_answers(tiny_config):
    """``train.head_init: linear_probe``: before any step, the model's validation predictions are the
    logistic regression's (its weights were copied into the head), and better than a random head's."""
    from rich.console import Console

    from tunekit.models import load_base, predict_proba
    from tunekit.train.labelled import linear_probe

    cfg = load_config(tiny_config(model={"pooling": "mean"}))
    prepared = data.prepare(cfg)
    model, tokenizer = load_base(cfg.model.base, prepared.labels, pooling="mean")
    texts, truth = list(prepared.validation["text"]), np.asarray(list(prepared.validation["label"]))

    def accuracy() -> float:
        return float((predict_proba(model, tokenizer, texts, None, cfg.model.max_length, 16, torch.device("cpu")).argmax(1) == truth).mean())

    random_head = accuracy()
    probe = linear_probe(model, tokenizer, prepared, cfg, Console(quiet=True))
    assert accuracy() == pytest.approx(probe) and probe > random_head
