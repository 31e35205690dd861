"""GGUF export on the tiny Llama: the written file, read back by transformers' GGUF loader, gives the
model's logits (exactly for f32, within the tolerance for f16 and q8_0); a trained LoRA adapter
exports with its parity check recorded, and a check that fails keeps nothing."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

pytest.importorskip("gguf", reason="gguf not installed (`make install` installs it)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tunekit.models.tiny import build_tiny_llama

    texts = [f"reverse: {a} {b} {c}" for a in ("apple", "pear", "plum") for b in ("fig", "kiwi", "lime") for c in ("mango", "peach")]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-gguf"), texts, hidden_size=64, layers=2)


def test_write_gguf_round_trips_the_weights(tiny, tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunekit.models.gguf_export import GGUF_KINDS, write_gguf

    reference = AutoModelForCausalLM.from_pretrained(tiny).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(tiny)("reverse: apple fig mango")["input_ids"]])
    sizes = {}
    for kind, tolerance in GGUF_KINDS.items():
        out = tmp_path / kind
        out.mkdir()
        path = write_gguf(tiny, out / "model.gguf", kind)
        sizes[kind] = path.stat().st_size
        fields = gguf.GGUFReader(path).fields
        assert fields["general.architecture"].contents() == "llama"
        assert fields["tokenizer.ggml.model"].contents() == "gpt2"
        reloaded = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf").eval()
        with torch.inference_mode():
            diff = float((reference(input_ids=ids).logits - reloaded(input_ids=ids).logits).abs().max())
        assert diff <= (1e-5 if kind == "f32" else tolerance), (kind, diff)  # f32: the query/key permutation is exact
    assert sizes["q8_0"] < sizes["f16"] < sizes["f32"]


@pytest.mark.slow
def test_lora_adapter_exports_to_gguf_with_its_parity_check(tiny, tmp_path):
    from rich.console import Console

    from tests.generation.conftest import reverse_rows, write_jsonl
    from tunekit.config import load_config
    from tunekit.data.conversations import prepare_conversations
    from tunekit.errors import ModelError
    from tunekit.models import load_tokenizer, templates
    from tunekit.models.gguf_export import export_gguf
    from tunekit.train import run

    write_jsonl(tmp_path / "train.jsonl", reverse_rows(120))
    raw = {"name": "reverse", "task": "generation", "workspace": str(tmp_path / "ws"),
           "data": {"train": "train.jsonl", "split": {"validation": 0.1, "test": 0.15, "seed": 3}},
           "model": {"base": str(tiny), "max_length": 48}, "method": {"kind": "lora", "r": 4, "alpha": 8},
           "train": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "checkpoint_every": 0}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "config.yaml")
    tokenizer = load_tokenizer(cfg.model.base)
    data = prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, "auto"))
    adapter = tmp_path / "run" / "adapter"
    run(cfg, data, adapter, Console(quiet=True))

    result = export_gguf(adapter, tmp_path / "gguf", "f16")
    assert result.out_file.is_file() and result.greedy_agreement == 1.0 and result.max_abs_logit_diff <= result.tolerance
    report = json.loads((tmp_path / "gguf" / "export-report.json").read_text())
    assert report["format"] == "gguf" and report["kind"] == "f16" and report["exported_from"]["method"] == "lora"
    assert report["check"]["prompts"] == 5 and report["check"]["greedy_agreement"] == 1.0
    assert report["manifest"]["name"] == "reverse" and report["manifest"]["base_model"]["id"] == str(tiny)  # lineage kept
    assert not (tmp_path / "gguf" / "tunekit.json").exists()  # for llama.cpp and Ollama, not a tunekit model directory
    assert (tmp_path / "gguf" / "Modelfile").read_text().startswith("FROM ./model.gguf")

    with pytest.raises(ModelError, match="differ from the adapter model's .*Nothing was kept"):
        export_gguf(adapter, tmp_path / "strict", "q8_0", tolerance=0.0)
    assert not (tmp_path / "strict").exists()
    with pytest.raises(ModelError, match="not empty"):
        export_gguf(adapter, tmp_path / "gguf", "f16")
