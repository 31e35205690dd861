"""``tunekit retrain --from-feedback`` on a ``task: preference`` config: corrected chat answers from
the request log become DPO pairs in a new dataset version, and the new model goes through the gate."""

from __future__ import annotations

import json

import pytest
import yaml
from rich.console import Console

from tests.generation.conftest import reverse_rows, write_jsonl
from tests.generation.test_preference import pair_rows
from tunekit.config import load_config
from tunekit.serve.requestlog import RequestLog


@pytest.mark.slow
def test_retrain_from_feedback_trains_dpo_on_feedback_pairs(tiny_llama, tmp_path):
    from tunekit.data.preference import prepare_preferences, prompt_of
    from tunekit.models import load_tokenizer, templates
    from tunekit.pipeline.retrain import feedback_pairs, retrain_from_feedback

    write_jsonl(tmp_path / "train.jsonl", pair_rows(60))
    raw = {"name": "prefer", "task": "preference", "workspace": str(tmp_path / "ws"),
           "data": {"train": "train.jsonl", "split": {"validation": 0.1, "test": 0.2, "seed": 3}},
           "model": {"base": str(tiny_llama), "max_length": 48}, "method": {"kind": "full"},
           "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "early_stopping_patience": 0,
                     "checkpoint_every": 0, "device": "cpu"},
           "eval": {"max_new_tokens": 4, "bootstrap_resamples": 100, "side_by_side": 0},
           "preference": {"loss": "dpo", "beta": 0.5},
           "gate": {"min_improvement": -1.0, "beat_champion": False}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "config.yaml")
    tokenizer = load_tokenizer(cfg.model.base)
    before = prepare_preferences(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))
    test_prompt = prompt_of(before.test[0])[0]["content"]

    # served answers (the list unreversed) and the corrections users sent (the reversal)
    fresh = [r for r in reverse_rows(300)[200:] if r["messages"][1]["content"] != r["messages"][0]["content"].removeprefix("reverse: ")][:4]
    served = [(r["messages"][0]["content"], r["messages"][0]["content"].removeprefix("reverse: "), r["messages"][1]["content"]) for r in fresh]
    served.append((test_prompt, "x y z", "z y x"))                     # a test prompt: left out (leakage)
    served.append((served[0][0], served[0][1], served[0][2]))          # the first pair again: a duplicate
    served.append((served[1][0], "same answer", "same answer"))        # the correction is the model's answer: skipped
    with RequestLog(cfg.workspace_dir / "serving.db") as log:
        for i, (prompt, answer, _) in enumerate(served):
            log.log({"id": f"chatcmpl-{i}", "route": "/v1/chat/completions", "model": "prefer", "version": "1", "status": 200,
                     "request": {"model": "prefer", "messages": [{"role": "user", "content": prompt}]},
                     "response": [{"text": answer, "finish_reason": "stop"}]})
        log.log({"id": "chatcmpl-rated", "route": "/v1/chat/completions", "model": "prefer", "status": 200,
                 "request": {"messages": [{"role": "user", "content": "reverse: a b c"}]}, "response": [{"text": "c b a"}]})
        log.flush()
        for i, (_, _, correction) in enumerate(served):
            log.add_feedback(f"chatcmpl-{i}", -1, None, correction, None, None)
        log.add_feedback("chatcmpl-rated", 1, None, None, None, None)  # a thumbs up alone: nothing preferred

    pairs = feedback_pairs(cfg, cfg.workspace_dir / "serving.db")
    assert len(pairs.pairs) == 6 and pairs.skipped == {"no_answer": 1, "not_chat": 0, "no_logged_answer": 0, "identical": 1}

    console = Console(width=200, record=True)
    outcome = retrain_from_feedback(cfg, console)
    text = " ".join(console.export_text().split())
    assert ("Feedback: 4 preference pairs added to training (chosen: the corrected answer, rejected: the model's logged answer); "
            "left out: 1 duplicates, 1 with a prompt in the test split (leakage); feedback that made no pair: 1 a rating or comment "
            "without a corrected answer, 1 the corrected answer is the model's own answer") in text
    summary = json.loads(next((cfg.workspace_dir / "retrain").glob("*/feedback.json")).read_text())
    assert (summary["used"], summary["duplicates"], summary["in_test"], summary["unusable"]) == (4, 1, 1, 2)
    assert summary["skipped"]["identical"] == 1 and summary["skipped"]["no_answer"] == 1

    written = [json.loads(line) for line in next((cfg.workspace_dir / "retrain").glob("*/train.jsonl")).read_text().splitlines()]
    from_feedback = [r for r in written if "metadata" in r]
    assert [(r["input"]["messages"][0]["content"], r["preferred_output"][0]["content"], r["non_preferred_output"][0]["content"],
             r["metadata"]["request_id"]) for r in from_feedback] == [(p, fix, given, f"chatcmpl-{i}") for i, (p, given, fix) in enumerate(served[:4])]
    assert outcome.card["data"]["rows"]["train"] == len(before.train) + 4
    assert outcome.card["data"]["test_fingerprint"] == before.test_fingerprint  # the same test pairs: comparable with the champion
    assert outcome.decision.primary == "pair_accuracy" and outcome.decision.passed and outcome.decision.alias == "champion"
