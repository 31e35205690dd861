"""`tunekit plan`: parameter counts equal those of the real model, and the weights + gradients +
optimizer estimate equals the bytes PyTorch holds after one real AdamW step on the tiny BERT."""

import pytest
import torch

from tunekit import methods
from tunekit.train import plan as planning
from tunekit.config import load_config
from tunekit.errors import ConfigError
from tunekit.models import load_base

LABELS = ["card", "refund", "transfer"]
CASES = {
    "lora": {"r": 4, "alpha": 8},
    "ia3": {},
    "prompt_tuning": {"num_virtual_tokens": 8},
    "freeze": {"layers": 1},
    "full": {},
}


def _real_step(cfg):
    """Build the model on CPU, apply the method, take one AdamW step; return (trainable, total, bytes held)."""
    torch.manual_seed(0)
    model, _ = load_base(cfg.model.base, LABELS)
    model = methods.apply(model, cfg.method)
    trainable, total = methods.count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    input_ids = torch.randint(5, model.config.vocab_size, (4, 12))
    loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    optimizer.step()
    tensors = [p for p in model.parameters()] + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return trainable, total, sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_counts_and_memory_match_the_real_model(kind, tiny_config):
    cfg = load_config(tiny_config(method={"kind": kind, **CASES[kind]}))
    result = planning.plan(cfg, num_labels=len(LABELS))
    trainable, total, held = _real_step(cfg)
    assert (result["trainable_params"], result["total_params"]) == (trainable, total)
    assert result["built_on"] == "meta"
    mem = result["memory"]
    assert mem["weights"] + mem["gradients"] + mem["optimizer"] == pytest.approx(held, rel=0.01)
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")


def test_activations_grow_linearly_with_batch_size(tiny_config):
    small = planning.plan(load_config(tiny_config(train={"batch_size": 8})))
    big = planning.plan(load_config(tiny_config(train={"batch_size": 24})))
    assert big["memory"]["activations"] == 3 * small["memory"]["activations"] > 0
    assert big["memory"]["weights"] == small["memory"]["weights"]


def test_freeze_keeps_activations_only_for_the_layers_that_train(tiny_config):
    full = planning.plan(load_config(tiny_config(method={"kind": "full"})))
    top = planning.plan(load_config(tiny_config(method={"kind": "freeze", "layers": 1})))
    assert 0 < top["memory"]["activations"] < full["memory"]["activations"] / 2


def test_qlora_counts_frozen_linear_weights_at_four_bits(tiny_config):
    lora = planning.plan(load_config(tiny_config(method={"kind": "lora", "r": 4})))
    qlora = planning.plan(load_config(tiny_config(method={"kind": "qlora", "r": 4})))
    assert qlora["trainable_params"] == lora["trainable_params"]
    assert qlora["memory"]["weights"] < lora["memory"]["weights"]
    assert qlora["activation_checkpointing"] and qlora["memory"]["activations"] < lora["memory"]["activations"]


def test_num_labels_defaults_to_two_and_says_so(tiny_config):
    result = planning.plan(load_config(tiny_config(method={"kind": "full"})))
    assert result["num_labels"] == 2 and result["num_labels_assumed"]
    assert "assumes 2 labels" in render(result)
    given = planning.plan(load_config(tiny_config(method={"kind": "full"})), num_labels=5)
    assert given["total_params"] - result["total_params"] == 3 * (32 + 1)  # three more rows of the 32-wide head
    assert not given["num_labels_assumed"]


def test_fits_between_lora_and_full_fine_tuning(tiny_config, monkeypatch):
    lora = planning.plan(load_config(tiny_config(method={"kind": "lora", "r": 4})))
    full_cfg = load_config(tiny_config(method={"kind": "full"}))
    full = planning.plan(full_cfg)
    assert lora["memory"]["total"] < full["memory"]["total"]
    middle = (lora["memory"]["total"] + full["memory"]["total"]) / 2 / planning.GIB
    monkeypatch.setitem(planning.GPUS, "fake-tiny", planning.CUDA_OVERHEAD_GIB + middle)
    result = planning.plan(full_cfg, gpu="fake-tiny")
    assert result["fits"] is False and result["headroom_gib"] <= 0
    advice = "\n".join(result["recommendations"])
    assert "train.batch_size" in advice and "method.kind: lora" in advice and "method.kind: qlora" in advice
    assert "does not fit" in render(result)
    big = planning.plan(full_cfg, gpu="h200-141gb")
    assert big["fits"] is True and big["headroom_gib"] > 139 and big["recommendations"] == []


def test_unknown_gpu_lists_the_known_ones(tiny_config):
    with pytest.raises(ConfigError, match="unknown GPU.*h100-80gb.*t4-16gb|unknown GPU.*t4-16gb.*h100-80gb"):
        planning.plan(load_config(tiny_config()), gpu="gtx-1080")


def test_method_that_fails_on_meta_is_built_on_cpu(tiny_config, monkeypatch):
    apply = methods.apply

    def picky(model, method, task="classification"):
        if next(model.parameters()).is_meta:
            raise NotImplementedError("needs real tensors")
        return apply(model, method, task)

    monkeypatch.setattr(methods, "apply", picky)
    cfg = load_config(tiny_config(method={"kind": "lora", "r": 4}))
    result = planning.plan(cfg, num_labels=len(LABELS))
    assert result["built_on"] == "cpu"
    assert result["trainable_params"] == _real_step(cfg)[0]


def test_bundled_minilm_with_lora_on_query_and_value(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nhello,a\n")
    (tmp_path / "config.yaml").write_text(
        "name: banking\ndata: {train: train.csv}\nmodel: {base: 'bundled:minilm', max_length: 64}\n"
        "method: {kind: lora, r: 8, target_modules: [query, value]}\ntrain: {batch_size: 16}\n"
    )
    result = planning.plan(load_config(tmp_path / "config.yaml"), gpu="t4-16gb", num_labels=77)
    assert result["total_params"] == pytest.approx(22.7e6, rel=0.01)
    lora = 6 * 2 * 8 * (384 + 384)  # 6 layers, query and value, A (8x384) and B (384x8)
    assert lora == 73_728
    assert result["trainable_params"] == lora + 384 * 77 + 77  # PEFT's SEQ_CLS trains the classifier
    assert (result["hidden_size"], result["num_layers"], result["num_heads"]) == (384, 6, 12)
    assert result["fits"] is True
    text = render(result)
    assert "| **total** |" in text and "`lora` on `bundled:minilm`" in text


def render(result) -> str:
    return planning.render_markdown(result)


def test_plan_measures_training_time_with_the_real_loop(tiny_config):
    """The estimate is the real loop's measured rate times the run's rows and epochs."""
    from tunekit import data

    cfg = load_config(tiny_config(train={"epochs": 5, "batch_size": 8}))
    prepared = data.prepare(cfg)
    t = planning.estimate_time(cfg, prepared, batches=2)
    assert t["measured_rows"] == 16 and t["train_rows"] == len(prepared.train) and t["epochs"] == 5
    assert t["seconds"] == pytest.approx(t["train_rows"] * 5 / t["examples_per_second"], rel=0.02)
    assert "Training time on this machine: about" in planning.render_time(t)
