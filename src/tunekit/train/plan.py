"""Plan stage: will this config fit on that GPU, answered before any weight is loaded.

``plan(cfg, gpu)`` builds the configured base model from its ``config.json`` alone, on PyTorch's
``meta`` device (shapes without storage, so a 7B model plans in seconds on a laptop), applies the
method exactly as training does, counts parameters and estimates the memory of one training step:

    weights      every parameter at 4 bytes (fp32; the loader gives no other dtype). QLoRA: each
                 frozen ``nn.Linear`` weight outside the head at 0.5 byte (4-bit NF4) plus 1/64 byte
                 for its double-quantised block scales; everything else at 4 bytes.
    gradients    trainable parameters x 4 bytes.
    optimizer    AdamW: ``exp_avg`` and ``exp_avg_sq`` (trainable x 8 bytes) plus one 4-byte ``step``
                 scalar per trainable tensor, as ``torch.optim.AdamW`` keeps them.
    activations  what autograd keeps for the backward pass; see ``_activation_bytes``.

On a GPU, ``CUDA_OVERHEAD_GIB`` (CUDA context, kernels, allocator slack) is added before comparing
with the card. Weights, gradients and optimizer state are exact counts; activations are an
estimate, and the plan says so.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from tunekit import methods, task_kinds
from tunekit.config import LoraMethod, QLoraMethod, TunekitConfig
from tunekit.errors import ConfigError, ModelError, TunekitError
from tunekit.models import resolve_base

__all__ = ["CUDA_OVERHEAD_GIB", "GPUS", "estimate_time", "plan", "render_markdown"]

GIB = 1024**3
# Total memory of common cards in GiB, as nvidia-smi reports it (a little above what PyTorch can use).
GPUS: dict[str, float] = {
    "t4-16gb": 15.0, "l4-24gb": 22.5, "a10-24gb": 22.5, "rtx4090-24gb": 24.0,
    "a100-40gb": 40.0, "a100-80gb": 80.0, "h100-80gb": 79.6, "h200-141gb": 140.4,
}
CUDA_OVERHEAD_GIB = 1.0  # CUDA context and kernels (~0.5 GiB) plus caching-allocator fragmentation
DEFAULT_NUM_LABELS = 2
CPU_FALLBACK_PARAMS = 500_000_000  # a method that cannot be applied on meta is built for real below this size (2 GB)
HEAD_NAMES = {"classifier", "score"}  # never quantised (load_base skips them) and trained in full
NF4_BYTES = 0.5 + 1 / 64  # 4 bits per weight + one 8-bit absmax per 64 weights (double quantisation)


def plan(cfg: TunekitConfig, gpu: str | None = None, num_labels: int | None = None) -> dict[str, Any]:
    """Parameter counts and the memory of one training step for ``cfg``; with ``gpu``, whether it fits.

    ``num_labels`` sizes the classification head; without it the plan assumes 2 and says so. Memory
    values are bytes, GPU values GiB.
    """
    gpu_gib = _gpu_memory(gpu)  # an unknown name fails before anything is built
    if num_labels is not None and num_labels < 1:
        raise ConfigError(f"num_labels must be at least 1, got {num_labels}")
    labels = num_labels or DEFAULT_NUM_LABELS
    result = _estimate(cfg, cfg.method, labels, cfg.train.batch_size)
    generation = task_kinds.kind(cfg.task).causal
    notes = [] if num_labels or generation else [f"The classification head assumes {labels} labels; pass the task's label count for its exact size."]
    if generation:
        notes.append("Generation: activations include the output logits (sequence x vocabulary, twice: logits and the float copy the loss reads); "
                     "packing fills every row to model.max_length, so the estimate is for full rows.")
    notes.append("Weights, gradients and optimizer state are exact counts at fp32; activations are an estimate (Korthikanti et al. 2022, at fp32).")
    if result["built_on"] == "cpu":
        notes.append(f"method.kind {cfg.method.kind} could not be applied to a weightless (meta) model, so the model was built on CPU to count it.")
    if result["activation_checkpointing"]:
        notes.append("QLoRA turns on activation checkpointing: only each layer's input is kept, and one layer is recomputed at a time.")
    result.update(num_labels=0 if generation else labels, num_labels_assumed=num_labels is None and not generation, notes=notes,
                  gpu=gpu, gpu_memory_gib=gpu_gib, fits=None, headroom_gib=None, recommendations=[])
    if gpu_gib is not None:
        headroom = _headroom(result["memory"]["total"], gpu_gib)
        result.update(fits=headroom >= 0, headroom_gib=round(headroom, 2))
        if headroom < 0:
            result["recommendations"] = _recommendations(cfg, result, gpu_gib)
    return result


def estimate_time(cfg: TunekitConfig, data, batches: int = 4) -> dict[str, Any]:
    """The training time of ``cfg`` on this machine, measured, not modelled: the real training loop
    runs for ``batches`` batches (one epoch over that many training rows, validated on one batch of
    rows, in a temporary folder), and its measured examples per second scale to the whole run.
    Validation and evaluation are not included; the figure is the optimisation loop alone."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from rich.console import Console

    from tunekit import train

    n = min(len(data.train), batches * cfg.train.batch_size)
    sample = dataclasses.replace(data, train=data.train.select(range(n)),
                                 validation=data.validation.select(range(min(len(data.validation), cfg.train.batch_size))))
    probe = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1, "checkpoint_every": 0, "early_stopping_patience": 0})})
    with tempfile.TemporaryDirectory(prefix="tunekit-plan-") as tmp:
        result = train.run(probe, sample, Path(tmp) / "adapter", Console(quiet=True))
    rate = result.train_examples_per_second
    seconds = len(data.train) * cfg.train.epochs / rate
    return {"measured_rows": n, "examples_per_second": round(rate, 2), "train_rows": len(data.train), "epochs": cfg.train.epochs,
            "seconds": round(seconds, 1)}


def render_time(t: dict[str, Any]) -> str:
    from tunekit.progress import clock

    return (f"Training time on this machine: about {clock(t['seconds'])} for {t['epochs']} epochs of {t['train_rows']:,} rows "
            f"(measured: {t['examples_per_second']} examples/s over {t['measured_rows']} rows; validation and evaluation come on top).\n")


def render_markdown(result: dict[str, Any]) -> str:
    """A short report: parameters, a memory table and, for a GPU, the verdict and what to change."""
    mem = result["memory"]
    share = result["trainable_params"] / result["total_params"]
    out = [
        f"### Plan: `{result['method']}` on `{result['base']}`", "",
        f"Parameters: {result['total_params']:,} total, {result['trainable_params']:,} trainable ({share:.2%})"
        + (f"; head for {result['num_labels']} labels{' (assumed)' if result['num_labels_assumed'] else ''}." if result["num_labels"] else "."), "",
        "| component | memory |", "|---|---:|",
        f"| weights | {_human(mem['weights'])} |",
        f"| gradients | {_human(mem['gradients'])} |",
        f"| optimizer (AdamW) | {_human(mem['optimizer'])} |",
        f"| activations (batch {result['batch_size']} x {result['seq_len']} tokens) | {_human(mem['activations'])} |",
        f"| **total** | **{_human(mem['total'])}** |", "",
    ]
    if result["gpu"] is not None:
        verdict = "fits" if result["fits"] else "does not fit"
        out.append(f"On `{result['gpu']}` ({result['gpu_memory_gib']} GiB, {CUDA_OVERHEAD_GIB} GiB kept for CUDA): "
                   f"**{verdict}**, headroom {result['headroom_gib']:+.2f} GiB.")
        out.append("")
    if result["recommendations"]:
        out += ["To make it fit:", *(f"- {r}" for r in result["recommendations"]), ""]
    out += [f"_{n}_" for n in result["notes"]]
    return "\n".join(out).rstrip() + "\n"


def _estimate(cfg: TunekitConfig, method, num_labels: int, batch_size: int) -> dict[str, Any]:
    """Build ``cfg.model.base`` with ``method`` on meta and count parameters and bytes."""
    hf_config = _hf_config(cfg, num_labels)
    model, built_on = _build(hf_config, method, cfg.task)
    trainable, total = methods.count_parameters(model)
    spec = methods.SPECS[method.kind]
    weights = _weight_bytes(model, quantized=spec.quantized_base)
    trainable_tensors = sum(1 for p in model.parameters() if p.requires_grad)
    shape = _shape(hf_config)
    checkpointing = spec.quantized_base or cfg.train.gradient_checkpointing or _checkpointing(model)
    seq_len = cfg.model.max_length + (method.num_virtual_tokens if spec.virtual_tokens else 0)  # virtual tokens lengthen every input
    per_row = _activation_bytes(shape, method, seq_len, checkpointing)
    if task_kinds.kind(cfg.task).causal:
        per_row += 2 * 4 * seq_len * hf_config.vocab_size  # fp32 logits and the copy cross-entropy reads
    memory = {
        "weights": weights,
        "gradients": trainable * 4,
        "optimizer": trainable * 8 + trainable_tensors * 4,
        "activations": per_row * batch_size,
    }
    memory["total"] = sum(memory.values())
    return {
        "base": cfg.model.base, "model_type": hf_config.model_type, "method": method.kind, **shape,
        "total_params": total, "trainable_params": trainable, "built_on": built_on,
        "activation_checkpointing": checkpointing, "batch_size": batch_size, "max_length": cfg.model.max_length,
        "seq_len": seq_len, "activation_bytes_per_row": per_row, "memory": memory,
    }


def _hf_config(cfg: TunekitConfig, num_labels: int):
    from transformers import AutoConfig

    source = resolve_base(cfg.model.base)
    try:
        return AutoConfig.from_pretrained(source, revision=cfg.model.revision, num_labels=num_labels)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.base {cfg.model.base!r}: its config.json could not be read ({exc}). Use `bundled:minilm`, "
                         "a local folder saved with save_pretrained, or a hub id this machine can download.") from None


def _build(hf_config, method, task: str = "classification"):
    """The model with ``method`` applied, on meta; on CPU if the method needs real tensors."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if task_kinds.kind(task).causal else AutoModelForSequenceClassification
    with torch.device("meta"):
        model = auto.from_config(hf_config)
    size = methods.count_parameters(model)[1]
    try:
        with torch.device("meta"), warnings.catch_warnings():
            # peft 0.21 still calls transformers 5's deprecated name (as in pyproject's test filters)
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            return methods.apply(model, method, task), "meta"
    except TunekitError:
        raise  # the config is wrong (targets that match nothing, too many layers): say so
    except Exception as exc:  # noqa: BLE001 - any failure on shape-only tensors
        if size > CPU_FALLBACK_PARAMS:
            raise ModelError(f"method.kind {method.kind} cannot be applied to a weightless (meta) copy of this model ({exc}), "
                             f"and at {size:,} parameters it is too big to build on CPU just to plan") from None
    return methods.apply(auto.from_config(hf_config), method, task), "cpu"


def _shape(hf_config) -> dict[str, int]:
    """Encoder dimensions; ``attribute_map`` lets DistilBERT's ``dim``/``n_layers`` answer to these names."""
    hidden = hf_config.hidden_size
    inter = getattr(hf_config, "intermediate_size", None) or getattr(hf_config, "hidden_dim", None) or 4 * hidden
    return {"hidden_size": hidden, "num_layers": hf_config.num_hidden_layers,
            "num_heads": hf_config.num_attention_heads, "intermediate_size": inter}


def _weight_bytes(model, quantized: bool) -> float:
    """4 bytes a parameter; for QLoRA the frozen linear weights outside the head at NF4 size."""
    total = sum(p.numel() * 4 for p in model.parameters())
    if not quantized:
        return total
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad and not HEAD_NAMES & set(name.split(".")):
            total -= module.weight.numel() * (4 - NF4_BYTES)
    return math.ceil(total)


def _checkpointing(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_activation_checkpointing", False))


def _activation_bytes(shape: dict[str, int], method, seq_len: int, checkpointing: bool) -> int:
    """Bytes autograd keeps for one row of ``seq_len`` tokens.

    Per encoder layer, Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models", eq. 1) count ``s*b*h*(34 + 5*a*s/h)`` bytes at fp16 with 1-byte dropout
    masks and a 4h feed-forward. Redone at fp32 (4-byte tensors, masks still 1 byte) with the
    model's own intermediate size ``I``, per row (b = 1):

        attention     21*s*h + 9*a*s*s_kv   (QKV input, Q and K, softmax out, dropout mask and
                                             out, V, output-projection input, dropout mask)
        feed-forward   5*s*h + 8*s*I        (input, GELU input, second-linear input, dropout mask)
        layer norms    8*s*h
        per layer      s * (34*h + 8*I + 9*a*s_kv)   (= s*h*(66 + 9*a*s/h) when I = 4h)

    plus ``9*s*h`` for the embeddings (sum, layer norm, dropout) when gradients reach them.
    ``s_kv`` is ``s`` plus prefix tuning's prefix. ``freeze`` keeps activations only for the
    layers that train; with activation checkpointing (QLoRA) each layer keeps only its input,
    ``4*s*h``, and one layer at a time is recomputed in full. Adapters' own small inputs (LoRA
    dropout) and fused attention kernels that skip the s*s matrix are not modelled, so for
    adapter methods this leans high.
    """
    h, layers, heads, inter = shape["hidden_size"], shape["num_layers"], shape["num_heads"], shape["intermediate_size"]
    s_kv = seq_len + (method.num_virtual_tokens if method.kind == "prefix_tuning" else 0)
    per_layer = seq_len * (34 * h + 8 * inter + 9 * heads * s_kv)
    if checkpointing:
        return layers * 4 * seq_len * h + per_layer
    stored = min(method.layers, layers) if method.kind == "freeze" else layers
    embeddings = 9 * seq_len * h if stored == layers else 0
    return stored * per_layer + embeddings


def _gpu_memory(gpu: str | None) -> float | None:
    if gpu is None:
        return None
    key = gpu.strip().lower()
    if key not in GPUS:
        known = ", ".join(f"{name} ({gib} GiB)" for name, gib in GPUS.items())
        raise ConfigError(f"--gpu {gpu!r}: unknown GPU; known: {known}")
    return GPUS[key]


def _headroom(total_bytes: float, gpu_gib: float) -> float:
    return gpu_gib - CUDA_OVERHEAD_GIB - total_bytes / GIB


def _recommendations(cfg: TunekitConfig, result: dict[str, Any], gpu_gib: float) -> list[str]:
    """What would fit instead: a smaller batch, LoRA instead of a method that trains whole layers, QLoRA."""
    out = []
    mem = result["memory"]
    fixed = mem["weights"] + mem["gradients"] + mem["optimizer"]
    room = (gpu_gib - CUDA_OVERHEAD_GIB) * GIB - fixed
    max_batch = int(room // result["activation_bytes_per_row"]) if room > 0 else 0
    if max_batch >= 1:
        out.append(f"`train.batch_size: {max_batch}` (from {cfg.train.batch_size}): activations shrink with the batch.")
    else:
        out.append(f"Even at batch size 1 the weights, gradients and optimizer state ({_human(fixed)}) leave no room; change the method or the card.")
    alternatives = []
    if cfg.method.kind in {"full", "freeze", "dora"}:
        alternatives.append(LoraMethod())
    if cfg.method.kind != "qlora":
        alternatives.append(QLoraMethod())
    for method in alternatives:
        alt = _estimate(cfg, method, result["num_labels"], cfg.train.batch_size)
        headroom = _headroom(alt["memory"]["total"], gpu_gib)
        where = "; needs CUDA and bitsandbytes" if method.kind == "qlora" else ""
        verdict = f"fits with {headroom:.2f} GiB to spare" if headroom >= 0 else f"still {-headroom:.2f} GiB short"
        out.append(f"`method.kind: {method.kind}` (r={method.r}, default targets{where}): {_human(alt['memory']['total'])}, {verdict}.")
    return out


def _human(n: float) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024:.1f} KiB"
