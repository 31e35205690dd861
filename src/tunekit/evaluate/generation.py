"""Evaluate stage for generation: decode the test prompts, score them beside the base model's answers.

The fine-tuned model answers the same scored test rows as the zero- and k-shot baselines, with the
same template and greedy decoding; ``textgen`` gives exact match, ROUGE-L, BLEU and chrF with
paired bootstrap intervals against the best baseline. Loss and perplexity on validation and on
every test row come from the same token loss training minimised. Every answer is written to
``predictions.jsonl`` beside the report, so any number in it can be recomputed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tunekit.data.answers import scored_rows
from tunekit.data.conversations import prompt_and_reference
from tunekit.evaluate import EvalResult, plots, textgen
from tunekit.evaluate.grounding import grounding_rate
from tunekit.evaluate.metrics import best

__all__ = ["lm_losses", "run_generation", "score_generator"]


def score_generator(cfg, data, generator, console=None) -> tuple[dict, list[str]]:
    """Generation metrics and answers of ``generator`` on the scored test rows."""
    rows = [prompt_and_reference(data.test[i]) for i in scored_rows(cfg, data)]
    answers = generator.chat([p for p, _ in rows], max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.train.eval_batch_size,
                             progress=console)
    preds = [a.text for a in answers]
    return textgen.generation_metrics(preds, [r for _, r in rows], extract=cfg.eval.extract), preds


def lm_losses(cfg, data, generator) -> dict:
    """Validation and test loss per trained token (the training objective) and their perplexities."""
    from tunekit.models.packing import mean_loss

    pad = generator.tokenizer.pad_token_id
    out = {}
    with generator.lock:
        for split, key in (("validation", "val"), ("test", "test")):
            loss = mean_loss(generator.model, data.encoded[split], cfg, pad, generator.device)
            out.update({f"{key}_loss": loss, f"{key}_perplexity": math.exp(min(loss, 50))})
    return out


def run_generation(cfg, data, generator, baselines: list, out_dir: Path, history: list[dict],
                   console=None) -> EvalResult:
    """Score ``generator`` beside ``baselines`` (the prompted base model's ``GenerationBaseline`` results,
    passed in so evaluation does not depend on the baseline stage) on the scored test rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, preds = score_generator(cfg, data, generator, console)
    metrics.update(lm_losses(cfg, data, generator), scored_rows=len(preds))
    base = best(baselines, cfg.eval.primary)
    idx = scored_rows(cfg, data)
    rows = [prompt_and_reference(data.test[i]) for i in idx]
    refs = [r for _, r in rows]
    prompts = [last_user(p) for p, _ in rows]
    files = {"predictions": _write_predictions(out_dir / "predictions.jsonl", [data.test[i]["id"] for i in idx], prompts, refs,
                                               {b.name: b.predictions for b in baselines}, preds)}
    if history:
        files["training_curve"] = plots.training_curve(history, "loss", out_dir / "training_curve.png")
    analysis = {
        "versus_baseline": textgen.compare(base.predictions, preds, refs, cfg.eval.bootstrap_resamples, seed=cfg.train.seed, extract=cfg.eval.extract),
        "side_by_side": textgen.side_by_side(prompts, refs, base.predictions, preds, cfg.eval.side_by_side, seed=cfg.train.seed),
        "decoding": {"max_new_tokens": cfg.eval.max_new_tokens, "strategy": "greedy"},
    }
    if cfg.eval.grounding:
        contexts = ["\n".join(m["content"] for m in p if m["role"] != "assistant") for p, _ in rows]
        analysis["grounding"] = {"fine_tuned": grounding_rate(preds, contexts), base.name: grounding_rate(base.predictions, contexts)}
        metrics["grounded_rate"] = analysis["grounding"]["fine_tuned"]["rate"]
    if cfg.gate.graders:  # their pass rates, which the gate decides on
        from tunekit.evaluate.gate_graders import for_gate

        analysis["gate_graders"] = for_gate(cfg, data, out_dir, analysis)
    return EvalResult(metrics=metrics, baseline=base.metrics, probs=None, files=files, analysis=analysis)


def last_user(prompt: list[dict]) -> str:
    """The last user turn of a prompt (what the report shows as the question)."""
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else ""


def _write_predictions(path: Path, ids, prompts, refs, baselines: dict[str, list[str]], preds) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i, row_id in enumerate(ids):
            fh.write(json.dumps({"id": row_id, "prompt": prompts[i], "reference": refs[i], "fine_tuned": preds[i],
                                 **{name: answers[i] for name, answers in baselines.items()}}, ensure_ascii=False) + "\n")
    return path
