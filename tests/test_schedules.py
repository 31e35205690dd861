"""Discriminative learning rates and gradual unfreezing, on the tiny BERT with any method."""

import pytest
import torch

from tunekit import data, methods, train
from tunekit.config import load_config
from tunekit.models import load_base
from tunekit.train import loop, optimizer, schedules


def test_depth_of_parameter_names():
    assert schedules.depth("bert.embeddings.word_embeddings.weight", 2) == 0
    assert schedules.depth("bert.encoder.layer.0.attention.self.query.weight", 2) == 1
    assert schedules.depth("base_model.model.bert.encoder.layer.1.output.dense.lora_A.default.weight", 2) == 2
    assert schedules.depth("classifier.weight", 2) == 3
    assert schedules.layer_scale("bert.embeddings.x", 2, 0.5) == 0.125  # three levels below the top
    assert schedules.layer_scale("bert.encoder.layer.1.x", 2, 0.5) == 0.5
    assert schedules.layer_scale("bert.encoder.layer.1.x", 2, None) == 1.0


def test_layer_lr_decay_sets_one_rate_per_level(tiny_config):
    cfg = load_config(tiny_config(method={"kind": "full"}, train={"learning_rate": 1e-3, "head_learning_rate": 1e-2, "layer_lr_decay": 0.5}))
    model, _ = load_base(cfg.model.base, ["a", "b", "c"])
    opt, _ = optimizer.build(model, cfg, 10)
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    lrs = {name: by_param[id(p)] for name, p in model.named_parameters()}
    assert lrs["classifier.weight"] == 1e-2
    assert lrs["bert.pooler.dense.weight"] == pytest.approx(1e-3)
    assert lrs["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(5e-4)
    assert lrs["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(2.5e-4)
    assert lrs["bert.embeddings.word_embeddings.weight"] == pytest.approx(1.25e-4)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_gradual_unfreezing_trains_from_the_top_down(kind, tiny_config, tmp_path, monkeypatch):
    cfg = load_config(tiny_config(method={"kind": kind}, train={"epochs": 3, "gradual_unfreezing": True}))
    prepared = data.prepare(cfg)
    snapshots = []
    original = loop._end_epoch

    def record(st, cfg_, objective, *args):
        snapshots.append({n: p.detach().clone() for n, p in objective.model.named_parameters()})
        return original(st, cfg_, objective, *args)

    monkeypatch.setattr(loop, "_end_epoch", record)
    initial = {}
    real_apply = methods.apply

    def keep_initial(model, method, **kwargs):
        wrapped = real_apply(model, method, **kwargs)
        initial.update({n: p.detach().clone() for n, p in wrapped.named_parameters()})
        return wrapped

    monkeypatch.setattr(methods, "apply", keep_initial)
    train.run(cfg, prepared, tmp_path / "adapter")

    def moved(before, after, level):
        return any(not torch.equal(before[n], after[n]) for n in after if schedules.depth(n, 2) == level and n in before)

    # epoch 1: only the top level (head, pooler) moved; epoch 2 adds block 1; epoch 3 adds block 0
    assert moved(initial, snapshots[0], 3) and not moved(initial, snapshots[0], 2) and not moved(initial, snapshots[0], 1)
    assert moved(snapshots[0], snapshots[1], 2) and not moved(snapshots[0], snapshots[1], 1)
    assert moved(snapshots[1], snapshots[2], 1)
