"""The generation commands: models tiny, data check and preview."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.generation.conftest import reverse_rows, write_jsonl


def tunekit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunekit.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_models_tiny_writes_a_loadable_causal_lm(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", reverse_rows(12))
    proc = tunekit("models", "tiny", "--out", str(tmp_path / "tiny"), "--data", str(data), "--hidden-size", "32", "--layers", "1")
    assert proc.returncode == 0, proc.stderr
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(tmp_path / "tiny").model_type == "llama"
    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert tok.decode(tok("reverse: fig kiwi")["input_ids"], skip_special_tokens=True) == "reverse: fig kiwi"


def test_data_check_and_preview(tmp_path, tiny_llama):
    write_jsonl(tmp_path / "train.jsonl", reverse_rows(40))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "rev", "task": "generation", "workspace": str(tmp_path / "ws"),
                                      "data": {"train": "train.jsonl"}, "model": {"base": str(tiny_llama), "max_length": 48}}))
    check = tunekit("data", "check", str(config))
    assert check.returncode == 0, check.stderr
    assert "28 train / 4 validation / 8 test conversations, template chatml" in check.stdout
    preview = tunekit("data", "preview", str(config), "-n", "2")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.count("example ") == 2 and "trained" in preview.stdout and "<|im_start|>assistant" in preview.stdout


def test_preview_of_a_classification_config_says_why_not(tiny_config):
    proc = tunekit("data", "preview", str(tiny_config()))
    assert proc.returncode != 0 and "task generation" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_generation_data_names_the_line(tmp_path, tiny_llama):
    rows = reverse_rows(12)
    lines = [__import__("json").dumps(r) for r in rows]
    lines[4] = '{"messages": [{"role": "robot", "content": "beep"}]}'
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "rev", "task": "generation", "workspace": str(tmp_path / "ws"),
                                      "data": {"train": "train.jsonl"}, "model": {"base": str(tiny_llama)}}))
    proc = tunekit("data", "check", str(config))
    assert proc.returncode != 0 and "line 5" in proc.stderr and "robot" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_for_a_causal_lm_counts_logits(tmp_path, tiny_llama):
    from tunekit.config import load_config
    from tunekit.train.plan import plan

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "rev", "task": "generation", "data": {"train": "train.jsonl"},
                                      "model": {"base": str(tiny_llama), "max_length": 64}, "method": {"kind": "lora", "r": 4}}))
    result = plan(load_config(config), "t4-16gb")
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(tiny_llama).vocab_size
    assert result["num_labels"] == 0 and result["fits"]
    assert result["activation_bytes_per_row"] > 2 * 4 * 64 * vocab  # the logits are part of it
    assert 0 < result["trainable_params"] < result["total_params"]


def test_models_tiny_reads_a_config_like_a_run(tmp_path):
    """Issue 18 item 9: `models tiny --config` trains the tokenizer on the files a config names, read
    with its options (here a TSV of questions and answers, no conversion to chat JSONL first)."""
    (tmp_path / "qa.tsv").write_text("q\ta\nwhat is the capital of peru\tlima\nname a prime\tseven\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "qa", "task": "generation", "data": {"train": "qa.tsv", "prompt_column": "q",
                                                                                     "completion_column": "a"}}))
    proc = tunekit("models", "tiny", "--out", str(tmp_path / "tiny"), "--config", str(config), "--hidden-size", "32", "--layers", "1")
    assert proc.returncode == 0, proc.stderr
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert tok.decode(tok("capital of peru lima")["input_ids"], skip_special_tokens=True) == "capital of peru lima"
