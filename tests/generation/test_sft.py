"""Supervised fine-tuning end to end on a tiny Llama: masks, template and EOS right, or the task fails.

The reverse-a-list task is the proof: held-out exact match near 100% is only reachable when the
loss covers the answers (and only them), the prompt at evaluation is rendered exactly as in
training, and EOS was trained so the model stops. The untrained base model scores near 0.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.generation.conftest import reverse_rows, write_jsonl
from tunekit.config import load_config
from tunekit.data.conversations import Encoded
from tunekit.models.packing import collate, pack, token_loss


def test_packing_keeps_examples_apart(tiny_llama):
    """Packed rows give exactly the loss of the examples run one by one: no attention across examples."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    examples = [Encoded([1, 5, 6, 7, 8, 9], [0, 0, 0, 1, 1, 1]), Encoded([1, 10, 11, 12], [0, 0, 1, 1]),
                Encoded([1, 13, 14, 15, 16], [0, 1, 1, 1, 1])]
    cpu = torch.device("cpu")
    with torch.no_grad():
        packed_batch = collate(examples, 64, 0, packing=True)
        packed = token_loss(model, packed_batch, cpu).item()
        one_by_one = sum(token_loss(model, collate([e], 64, 0, packing=True), cpu).item() for e in examples)
        padded = token_loss(model, collate(examples, 64, 0, packing=False), cpu).item()
    assert packed_batch["input_ids"].shape == (1, 15)  # all three share one row, no padding
    assert packed == pytest.approx(one_by_one, rel=1e-5) and padded == pytest.approx(one_by_one, rel=1e-5)


def test_first_fit_decreasing_packs_tightly():
    rows = pack([30, 30, 20, 10, 10, 60], capacity=64)
    assert sorted(sorted(r) for r in rows) == [[0, 1], [2, 3, 4], [5]] or len(rows) == 3
    assert all(sum([30, 30, 20, 10, 10, 60][i] for i in r) <= 64 for r in rows)


@pytest.fixture
def reverse_config(tmp_path, tiny_llama):
    def make(**sections):
        write_jsonl(tmp_path / "train.jsonl", reverse_rows(360))
        raw = {"name": "reverse", "task": "generation", "workspace": str(tmp_path / "ws"),
               "data": {"train": "train.jsonl", "split": {"validation": 0.1, "test": 0.15, "seed": 3}},
               "model": {"base": str(tiny_llama), "max_length": 48},
               "method": {"kind": "full"},
               "train": {"epochs": 30, "batch_size": 16, "learning_rate": 3e-3, "weight_decay": 0.0,
                         "early_stopping_patience": 0, "checkpoint_every": 0},
               "eval": {"max_new_tokens": 12, "k_shot": 2, "bootstrap_resamples": 200}}
        for key, value in sections.items():
            raw[key] = {**raw.get(key, {}), **value} if key != "method" else value
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
        return load_config(tmp_path / "config.yaml")

    return make


@pytest.fixture(scope="module")
def reverse_run(tiny_llama, tmp_path_factory):
    """The whole pipeline once on the reverse task (full fine-tuning of the tiny Llama, ~15 s)."""
    from rich.console import Console

    from tunekit import pipeline

    root = tmp_path_factory.mktemp("reverse")
    write_jsonl(root / "train.jsonl", reverse_rows(360))
    raw = {"name": "reverse", "task": "generation", "workspace": str(root / "ws"),
           "data": {"train": "train.jsonl", "split": {"validation": 0.1, "test": 0.15, "seed": 3}},
           "model": {"base": str(tiny_llama), "max_length": 48}, "method": {"kind": "full"},
           "train": {"epochs": 30, "batch_size": 16, "learning_rate": 3e-3, "weight_decay": 0.0, "early_stopping_patience": 0, "checkpoint_every": 0},
           "eval": {"max_new_tokens": 12, "k_shot": 2, "bootstrap_resamples": 200, "grounding": True}}
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    return pipeline.run(load_config(root / "config.yaml"), Console(width=120, record=True))


@pytest.mark.slow
def test_tiny_llama_learns_to_reverse_lists(reverse_run):
    outcome = reverse_run
    card = outcome.card
    tuned, baselines = card["model"]["metrics"], {b["name"]: b["metrics"] for b in card["baselines"]}
    assert tuned["exact_match"] >= 0.95, card["analysis"]["side_by_side"]
    assert all(m["exact_match"] <= 0.05 for m in baselines.values()) and len(baselines) == 2
    assert card["analysis"]["versus_baseline"]["rouge_l"]["low"] > 0.5
    assert outcome.decision.passed and outcome.decision.alias == "champion"
    rows = [json.loads(line) for line in (outcome.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == card["data"]["rows"]["test"] and {"prompt", "reference", "fine_tuned"} <= set(rows[0])
    manifest = json.loads((outcome.run_dir / "adapter" / "tunekit.json").read_text())
    assert manifest["task"] == "generation" and manifest["template"]["name"] == "chatml"
    assert (outcome.run_dir / "report.html").is_file()
    grounding = card["analysis"]["grounding"]  # a reversed list only uses words of the prompt
    assert grounding["fine_tuned"]["rate"] >= 0.95 and "Grounding in the prompt" in (outcome.run_dir / "report.md").read_text()


@pytest.mark.slow
def test_the_served_model_reverses_lists_through_the_openai_client(reverse_run, tmp_path):
    """The registered champion behind the real server, asked by the official client: the same exact match."""
    from openai import OpenAI

    from tests.conftest import local_settings
    from tests.serve.conftest import live_server
    from tunekit.serve import create_app

    rows = [json.loads(line) for line in (reverse_run.run_dir / "predictions.jsonl").read_text().splitlines()]
    tracking = f"sqlite:///{reverse_run.run_dir.parents[1] / 'mlflow.db'}"
    make = lambda port: create_app(local_settings(model="reverse@champion", tracking_uri=tracking, port=port, workspace=str(tmp_path)))  # noqa: E731
    with live_server(make) as url, OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=60) as client:
        answers = [client.chat.completions.create(model="reverse", temperature=0, max_tokens=12,
                                                  messages=[{"role": "user", "content": row["prompt"]}]).choices[0].message.content
                   for row in rows]
    exact = sum(a.strip() == row["reference"] for a, row in zip(answers, rows)) / len(rows)
    assert exact >= 0.95 and answers == [row["fine_tuned"] for row in rows]  # served exactly as evaluated


def test_lora_adapter_exports_merged_and_verified(reverse_config, tmp_path):
    """A LoRA run, merged: the standalone model gives the adapter's logits; a bad tolerance keeps nothing."""
    from rich.console import Console

    from tunekit.data.conversations import prepare_conversations
    from tunekit.errors import ModelError
    from tunekit.models.export import export_merged
    from tunekit.models import load_tokenizer, templates
    from tunekit.train import run

    cfg = reverse_config(method={"kind": "lora", "r": 4, "alpha": 8}, train={"epochs": 1})
    tokenizer = load_tokenizer(cfg.model.base)
    data = prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, "auto"))
    adapter = tmp_path / "run" / "adapter"
    run(cfg, data, adapter, Console(quiet=True))
    assert (adapter / "adapter_config.json").is_file()
    result = export_merged(adapter, tmp_path / "merged")
    assert result.max_abs_diff <= 1e-3 and result.prompts == 5
    manifest = json.loads((tmp_path / "merged" / "tunekit.json").read_text())
    assert manifest["method"] == "full" and manifest["merged_from"]["method"] == "lora"
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    with pytest.raises(ModelError, match="not empty"):
        export_merged(adapter, tmp_path / "merged")


def test_qlora_without_cuda_fails_before_loading(reverse_config):
    from rich.console import Console

    from tunekit import pipeline
    from tunekit.errors import ModelError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    with pytest.raises(ModelError, match="qlora needs a CUDA GPU"):
        pipeline.run(reverse_config(method={"kind": "qlora"}), Console(quiet=True))


def test_packing_check_detects_a_model_that_mixes_examples(tiny_llama):
    """A model that ignores restarting position ids (here: forced to a plain causal mask) is caught."""
    from transformers import AutoModelForCausalLM

    from tunekit.models.packing import packing_isolates

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert packing_isolates(model, torch.device("cpu"))
    original = model.forward

    def leaky(*args, position_ids=None, **kwargs):  # drops the position ids: one long causal sequence
        return original(*args, **kwargs)

    model.forward = leaky
    assert not packing_isolates(model, torch.device("cpu"))


def test_a_loaded_lora_adapter_generates_with_its_adapter(reverse_config, tmp_path):
    """The regression test for evaluation scoring a LoRA run with the bare base model's answers:
    the loaded generator's logits move away from the base's and equal plain PEFT's on the same adapter."""
    from peft import PeftModel
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from tunekit.data.conversations import prepare_conversations
    from tunekit.models import load_tokenizer, templates
    from tunekit.models.causal import load_generator
    from tunekit.train import run

    cfg = reverse_config(method={"kind": "lora", "r": 4, "alpha": 8}, train={"epochs": 2})
    tokenizer = load_tokenizer(cfg.model.base)
    data = prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, "auto"))
    adapter = tmp_path / "run" / "adapter"
    run(cfg, data, adapter, Console(quiet=True))
    gen = load_generator(adapter)
    prompt = gen.encode_chat([{"role": "user", "content": "reverse: apple pear plum"}])
    tuned = gen.next_token_logits(prompt)
    base = gen.next_token_logits(prompt, adapter=gen.base_model)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cfg.model.base), adapter).eval()
    with torch.no_grad():
        expected = plain(input_ids=torch.tensor([prompt])).logits[0, -1]
        untouched = AutoModelForCausalLM.from_pretrained(cfg.model.base).eval()(input_ids=torch.tensor([prompt])).logits[0, -1]
    assert (tuned - base).abs().max() > 1e-2
    torch.testing.assert_close(tuned, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(base, untouched, rtol=1e-4, atol=1e-4)
    gen.generate([prompt], max_new_tokens=2, adapter=gen.base_model)  # asking for the base leaves the adapter on afterwards
    torch.testing.assert_close(gen.next_token_logits(prompt), tuned)
