"""Every adaptation method on the tiny BERT (one table of cases, as PEFT tests its methods):
the trainable parameter count is what the method promises, the loss falls, and the saved model
reloads to the same outputs."""

import numpy as np
import pytest
import torch

from tunekit import data, methods, train
from tunekit.config import METHODS, load_config
from tunekit.errors import ConfigError, ModelError
from tunekit.methods import prompt
from tunekit.models import load_base, load_trained
from tunekit.train import labelled

HIDDEN, INTER, LAYERS, LABELS, R, TOKENS = 32, 64, 2, 3, 4, 8
HEAD = HIDDEN * LABELS + LABELS
POOLER = HIDDEN * HIDDEN + HIDDEN
LORA_PER_LAYER = 4 * R * (2 * HIDDEN) + R * (HIDDEN + INTER) + R * (INTER + HIDDEN)
LORA = LAYERS * LORA_PER_LAYER + R * 2 * HIDDEN + HEAD  # + the pooler's LoRA
BLOCK = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN + (HIDDEN * INTER + INTER) + (INTER * HIDDEN + HIDDEN) + 2 * HIDDEN

CASES = {
    "lora": ({"r": R, "alpha": 8}, LORA),
    "rslora": ({"r": R, "alpha": 8}, LORA),
    # DoRA adds one magnitude per output feature of every adapted layer
    "dora": ({"r": R, "alpha": 8}, LORA + LAYERS * (4 * HIDDEN + INTER + HIDDEN) + HIDDEN),
    # IA3 (PEFT's BERT default): key and value outputs, and the inputs of both dense output layers
    "ia3": ({}, LAYERS * (HIDDEN + HIDDEN + HIDDEN + INTER) + HEAD),
    "prompt_tuning": ({"num_virtual_tokens": TOKENS}, TOKENS * HIDDEN + HEAD),
    "prefix_tuning": ({"num_virtual_tokens": TOKENS}, TOKENS * LAYERS * 2 * HIDDEN + HEAD),
    "p_tuning": ({"num_virtual_tokens": TOKENS, "encoder_hidden_size": 16}, None),
    "freeze": ({"layers": 1}, BLOCK + POOLER + HEAD),
    "full": ({}, None),
}


def test_every_method_has_a_case():
    assert set(CASES) | {"qlora"} == set(METHODS)


def test_one_spec_row_per_configurable_method_and_its_facts_agree():
    assert list(methods.SPECS) == list(METHODS)
    for kind, spec in methods.SPECS.items():
        assert spec.kind == kind and spec.config is METHODS[kind] and spec.config().kind == kind
        assert not (spec.mergeable and not spec.peft), f"{kind}: only an adapter can be merged into the base"
        assert not (spec.mergeable and spec.prompt_based), f"{kind}: virtual tokens live outside the weights"
        assert not (spec.virtual_tokens and not spec.prompt_based), kind
    assert methods.PROMPT_BASED == {"prompt_tuning", "prefix_tuning", "p_tuning"}
    assert methods.VIRTUAL_TOKENS == {"prompt_tuning", "p_tuning"}  # prefix tuning's prefixes are keys/values, not input positions
    assert methods.MERGEABLE == {"lora", "dora", "rslora", "ia3"}
    assert methods.PEFT_METHODS == set(methods.SPECS) - {"freeze", "full"}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_method_trains_saves_and_reloads(kind, tiny_config, tmp_path):
    options, expected = CASES[kind]
    # the tiny model is random, so every method gets steps of at least 5e-3 (the defaults suit MiniLM)
    lr = max(methods.SPECS[kind].learning_rate, 5e-3)
    cfg = load_config(tiny_config(method={"kind": kind, **options}, train={"epochs": 4, "learning_rate": lr}))
    prepared = data.prepare(cfg)
    model, _ = load_base(cfg.model.base, prepared.labels)
    total = methods.count_parameters(model)[1]
    if kind == "prefix_tuning" and not prompt.takes_past_key_values(model):
        # transformers 5.24 renamed BERT's past_key_values: a config error naming what works, not a crash mid-training
        with pytest.raises(ConfigError, match="prefix_tuning cannot run on this bert encoder.*prompt_tuning"):
            methods.apply(model, cfg.method)
        return
    trainable, _ = methods.count_parameters(methods.apply(model, cfg.method))
    if expected is not None:
        assert trainable == expected
    elif kind == "full":
        assert trainable == total
    else:
        assert 0 < trainable < total
    result = train.run(cfg, prepared, tmp_path / kind)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    assert ((tmp_path / kind / "adapter_config.json").exists()) == (kind in methods.PEFT_METHODS)
    texts = list(prepared.test["text"])[:5]
    first, second = load_trained(tmp_path / kind), load_trained(tmp_path / kind)
    np.testing.assert_allclose(first.predict_proba(texts), second.predict_proba(texts), atol=1e-6)
    metrics_dir = tmp_path / kind
    assert (metrics_dir / "tunekit.json").exists()


def test_qlora_without_cuda_fails_before_loading(tiny_config, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    cfg = load_config(tiny_config(method={"kind": "qlora"}))
    loaded = []
    monkeypatch.setattr(labelled, "load_base", lambda *a, **k: loaded.append(1))
    with pytest.raises(ModelError, match="qlora needs a CUDA GPU"):
        train.run(cfg, data.prepare(cfg), tmp_path / "q")
    assert not loaded


def test_freeze_refuses_more_layers_than_the_model_has(tiny_config):
    from tunekit.errors import ConfigError

    cfg = load_config(tiny_config(method={"kind": "freeze", "layers": 5}))
    model, _ = load_base(cfg.model.base, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="has 2 transformer blocks"):
        methods.apply(model, cfg.method)


def test_compare_methods_table(tiny_config):
    from rich.console import Console

    from tunekit.pipeline.compare import compare_methods

    cfg = load_config(tiny_config(train={"epochs": 2}))
    table = compare_methods(cfg, ["ia3", "full"], Console(quiet=True))
    rows = {r["method"]: r for r in table["rows"]}
    assert set(rows) == {"baseline (tfidf-logreg)", "ia3", "full"}
    assert rows["ia3"]["trainable_params"] < rows["full"]["trainable_params"]
    assert rows["ia3"]["size_mb"] < rows["full"]["size_mb"]
    for kind in ("ia3", "full"):
        assert rows[kind]["low"] <= rows[kind]["diff"] <= rows[kind]["high"]
        assert rows[kind]["diff"] == pytest.approx(rows[kind]["macro_f1"] - rows["baseline (tfidf-logreg)"]["macro_f1"])
        assert rows[kind]["peak_memory_mb"] > 0
    with pytest.raises(Exception, match="unknown"):
        compare_methods(cfg, ["lora", "magic"], Console(quiet=True))
