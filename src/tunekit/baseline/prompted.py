"""Baseline for generation: the untouched base model, zero-shot and k-shot.

A fine-tuned generator has to beat what the base model already does when simply asked, and asked
with a few worked examples: both use the same template, the same test rows and the same greedy
decoding as the fine-tuned model, so the difference measures the fine-tuning and nothing else.
The k examples are drawn from train with the split seed and put in front of every test prompt as
earlier user/assistant turns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tunekit.data.answers import scored_rows
from tunekit.data.conversations import prompt_and_reference
from tunekit.evaluate.textgen import generation_metrics

__all__ = ["GenerationBaseline", "run_prompted", "scored_rows"]  # scored_rows: from data.answers, kept here for callers


@dataclass
class GenerationBaseline:
    name: str
    predictions: list[str]  # on ``scored_rows(cfg, data)``, in order
    metrics: dict
    seconds: float


def shots(cfg, data) -> list[dict]:
    """The k worked examples (user/assistant turns) from train, seeded; no system messages."""
    if not cfg.eval.k_shot:
        return []
    rng = np.random.default_rng(cfg.data.split.seed)
    picks = rng.choice(len(data.train), min(cfg.eval.k_shot, len(data.train)), replace=False)
    turns = []
    for i in picks:
        prompt, answer = prompt_and_reference(data.train[int(i)])
        turns += [m for m in prompt if m["role"] != "system"] + [{"role": "assistant", "content": answer}]
    return turns


def with_shots(prompt: list[dict], examples: list[dict]) -> list[dict]:
    system = [m for m in prompt if m["role"] == "system"]
    return system + examples + [m for m in prompt if m["role"] != "system"]


def fit_shots(generator, prompt: list[dict], examples: list[dict], context: int | None, max_new_tokens: int) -> list[dict]:
    """The prompt with as many of the worked examples (user/assistant pairs) as fit the model's
    context together with the answer; long examples would otherwise push the prompt past it."""
    while True:
        conversation = with_shots(prompt, examples)
        if not examples or context is None or len(generator.encode_chat(conversation)) + max_new_tokens <= context:
            return conversation
        examples = examples[:-2]  # drop the last worked example (a user turn and its answer)


def run_prompted(cfg, data, generator, console=None) -> list[GenerationBaseline]:
    """Zero-shot and (with ``eval.k_shot``) k-shot answers of ``generator`` (the bare base model) on the scored test rows."""
    rows = [prompt_and_reference(data.test[i]) for i in scored_rows(cfg, data)]
    refs = [ref for _, ref in rows]
    variants = [("base model zero-shot", [])]
    if cfg.eval.k_shot:
        variants.append((f"base model {cfg.eval.k_shot}-shot", shots(cfg, data)))
    out = []
    context = getattr(generator.model.config, "max_position_embeddings", None)
    for name, examples in variants:
        started = time.perf_counter()
        conversations = [fit_shots(generator, prompt, examples, context, cfg.eval.max_new_tokens) for prompt, _ in rows]
        preds = [g.text for g in generator.chat(conversations, max_new_tokens=cfg.eval.max_new_tokens,
                                                batch_size=cfg.train.eval_batch_size, progress=console)]
        out.append(GenerationBaseline(name, preds, generation_metrics(preds, refs, extract=cfg.eval.extract), round(time.perf_counter() - started, 2)))
    return out
