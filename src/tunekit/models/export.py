"""``tunekit export MODEL --merge --out DIR``: a standalone model with the adapter folded in.

Merging LoRA-family weights into the base gives a plain transformers checkpoint that any tool
loads without PEFT and that serves without the adapter's extra matmuls. A merge can go wrong
silently (a base at another revision, a quantised base, a method that does not merge), so before
saying it succeeded, export loads the written model back and checks that its logits match the
adapter model's on a set of prompts, within a tolerance.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from tunekit import task_kinds
from tunekit.artifacts import ExportCheck, Manifest, MergedFrom
from tunekit.errors import ModelError
from tunekit.methods import MERGEABLE

__all__ = ["ExportResult", "export_merged"]

DEFAULT_PROMPTS = ["Hello!", "Summarise the following text in one sentence.", "What is the capital of France?",
                   "reverse: apple pear plum", "Write a short, polite reply to a customer asking for a refund."]


@dataclass
class ExportResult:
    out_dir: Path
    max_abs_diff: float
    prompts: int
    tolerance: float


def export_merged(model_dir: Path, out_dir: Path, prompts: list[str] | None = None, tolerance: float = 1e-3) -> ExportResult:
    """Merge the adapter in ``model_dir`` into its base, write it to ``out_dir``, verify, return the largest logit difference."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    info = Manifest.read(model_dir)
    if not (model_dir / "adapter_config.json").is_file():
        raise ModelError(f"{model_dir}: a {info.method} model is already a full checkpoint; there is nothing to merge (copy the folder)")
    if info.method not in MERGEABLE:
        raise ModelError(f"{model_dir}: method {info.method} keeps virtual tokens outside the weights and cannot be merged; "
                         f"mergeable methods: {', '.join(sorted(MERGEABLE))}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError(f"--out {out_dir} exists and is not empty; choose a new folder")
    adapter, tokenizer, inputs = load_with_prompts(model_dir, info, prompts)
    with torch.inference_mode():
        expected = [adapter(**x).logits.float() for x in inputs]
        merged = adapter.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    reloaded = _reload(out_dir, info)
    with torch.inference_mode():
        diff = max(float((reloaded(**x).logits.float() - e).abs().max()) for x, e in zip(inputs, expected))
    if diff > tolerance:
        shutil.rmtree(out_dir)
        raise ModelError(f"the merged model's logits differ from the adapter model's by up to {diff:.2e} (tolerance {tolerance:g}); "
                         "nothing was kept. Check that the base model is the one the adapter was trained on.")
    info.model_copy(update={"method": "full", "merged_from": MergedFrom(path=str(model_dir), method=info.method),
                            "export_check": ExportCheck(prompts=len(inputs), max_abs_logit_diff=diff, tolerance=tolerance)}).write(out_dir)
    return ExportResult(out_dir, diff, len(inputs), tolerance)


def load_with_prompts(model_dir: Path, info: Manifest, prompts: list[str] | None):
    """The trained model in ``model_dir``, its tokenizer and ``prompts`` (or ``DEFAULT_PROMPTS``) encoded for it:
    what an export is checked against."""
    if task_kinds.kind(info.task).causal:
        from tunekit.models.causal import load_generator

        gen = load_generator(model_dir)
        texts = prompts or DEFAULT_PROMPTS
        inputs = [{"input_ids": torch.tensor([gen.encode_chat([{"role": "user", "content": t}])])} for t in texts]
        return gen.model, gen.tokenizer, inputs
    from tunekit.models import load_trained

    trained = load_trained(model_dir)
    texts = prompts or DEFAULT_PROMPTS
    inputs = [dict(trained.tokenizer(t, return_tensors="pt", truncation=True, max_length=info.max_length)) for t in texts]
    return trained.model, trained.tokenizer, inputs


def _reload(out_dir: Path, info: Manifest):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from tunekit.models import pooling

    if task_kinds.kind(info.task).causal:
        return AutoModelForCausalLM.from_pretrained(out_dir).eval()
    return pooling.apply(AutoModelForSequenceClassification.from_pretrained(out_dir), info.pooling).eval()  # read as it was trained
