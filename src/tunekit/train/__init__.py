"""Train stage: fine-tune the base model with the configured method on the frozen splits.

A plain PyTorch loop, no Trainer: tokenise once, batch by length, AdamW with linear warm-up and
decay, validate every epoch on the primary metric, keep the best epoch's weights, stop early when
validation stops improving, and write the adapter directory (PEFT's own files, the tokenizer and
``tunekit.json``), which ``PeftModel.from_pretrained`` loads unchanged.

Several processes (``tunekit run --nproc N``, ``torchrun``, ``accelerate launch``) train
data-parallel with the same global batches and order as one process (``train.distributed``).

``task: regression`` runs the same loop with a one-output head and mean squared error on the
target standardised with the training mean and std (see ``target_scaling``); early stopping then
follows the primary metric in its own direction (lower RMSE, MAE, MSE is better; higher R²).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from tunekit import methods, task_kinds
from tunekit.data import multitask
from tunekit.config import TunekitConfig, lower_is_better
from tunekit.data.prepare import text_pairs
from tunekit.errors import TunekitError
from tunekit.evaluate.metrics import classification_metrics, regression_metrics
from tunekit.artifacts import git_commit, package_versions
from tunekit.models import (
    MANIFEST,
    load_base,
    pick_device,
    predict_proba,
    predict_values,
    resolve_base,
)
from tunekit.progress import bar as progress_bar
from tunekit.train import distributed, schedules

__all__ = ["TrainResult", "run", "update_manifest"]

HEAD_NAMES = {"classifier", "score"}  # the freshly initialised output layer of sequence classifiers


@dataclass
class TrainResult:
    """What training produced and how it went."""

    adapter_dir: Path
    history: list[dict]
    best_epoch: int
    best_score: float
    stopped_early: bool
    trainable_params: int
    total_params: int
    seconds: float
    train_examples_per_second: float
    peak_memory_mb: float = field(default=0.0)
    train_tokens_per_second: float = field(default=0.0)  # generation: real (non-padding) tokens per second


@dataclass
class LoopState:
    """Where the loop is; with the model, optimizer, scheduler and RNG states it is a checkpoint."""

    epoch: int = 1
    step: int = 0                      # batches of ``epoch`` already trained
    batches: list | None = None        # this epoch's batch order (None: not drawn yet)
    loss_sum: float = 0.0
    history: list = field(default_factory=list)
    best_score: float = -np.inf
    best_epoch: int = 0
    best_state: dict | None = None
    stale: int = 0
    seen: int = 0
    train_seconds: float = 0.0


def run(cfg: TunekitConfig, data, out_dir: Path, console=None, resume: bool = False, on_epoch=None) -> TrainResult:
    """Train on ``data.train``, validate on ``data.validation``, write the best model to ``out_dir``.

    With ``train.checkpoint_every`` the loop state is saved every N steps and at every epoch end
    to ``checkpoint.pt`` beside ``out_dir``; ``resume=True`` continues from it (after any crash,
    even ``kill -9``) and ends with the same weights and metrics as an uninterrupted run.
    ``on_epoch(epoch, score)`` is called after each validation (hyperparameter search prunes there);
    ``score`` is the primary metric as measured, so for ``rmse``, ``mae`` and ``mse`` lower is better.
    ``task: generation`` trains a causal LM on packed conversations instead (``train.causal``).
    """
    if task_kinds.kind(cfg.task).causal:
        from tunekit.train.causal import run_causal

        return run_causal(cfg, data, out_dir, console, resume, on_epoch)
    distributed.init()
    console = console if distributed.is_main() else _quiet()
    seed_everything(cfg.train.seed)
    device = distributed.local_device(pick_device(cfg.train.device))
    methods.check(cfg.method, device)  # before any weights load
    quantized = cfg.method.kind == "qlora"
    regression = task_kinds.kind(cfg.task).numeric
    scaling = target_scaling(data) if regression else None
    model, tokenizer = load_base(cfg.model.base, data.labels, cfg.model.revision, quantize_4bit=quantized, regression=regression)
    model = methods.apply(model, cfg.method)
    if cfg.model.init_from:
        _init_from(model, cfg, data.labels, console)
    if not quantized:  # a 4-bit model is placed on the GPU as it loads and cannot be moved
        model.to(device)
    trainable, total = methods.count_parameters(model)
    model._tunekit_trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # before any schedule freezes some
    blocks = schedules.n_blocks(model)

    encoded = _tokenize(tokenizer, data.train, cfg.model.max_length)
    labels = _train_labels(data, scaling)
    multi = getattr(data, "multitask", False)  # multi-task: labels "task:label", each row within its own task
    allowed = torch.as_tensor(multitask.allowed_matrix(data.labels), device=device) if multi else None
    steps_per_epoch = -(-len(encoded) // cfg.train.batch_size)
    # DDP when there are several processes; gradual unfreezing leaves some trainable weights without gradients
    par = distributed.parallel(model, lambda m: _optimizer(m, cfg, steps_per_epoch * cfg.train.epochs),
                               find_unused=cfg.train.gradual_unfreezing)
    optimizer, scheduler = par.optimizer, par.scheduler
    rng = np.random.default_rng(cfg.train.seed)  # the same on every rank: the same batches in the same order
    val_texts, val_pairs = list(data.validation["text"]), text_pairs(data.validation)
    checkpoint = out_dir.parent / "checkpoint.pt"
    identity = {"data_fingerprint": data.fingerprint, "config_hash": cfg.hash()}
    st = _resume(checkpoint, identity, model, optimizer, scheduler, rng) if resume else \
        LoopState(best_score=np.inf if lower_is_better(cfg.eval.primary) else -np.inf)
    started = time.perf_counter()
    with progress_bar(console) as progress:
        task = progress.add_task("train", total=steps_per_epoch * cfg.train.epochs,
                                 completed=(st.epoch - 1) * steps_per_epoch + st.step, info="")
        while st.epoch <= cfg.train.epochs:
            epoch_start = time.perf_counter()
            par.model.train()
            if cfg.train.gradual_unfreezing:
                schedules.unfreeze_for_epoch(model, model._tunekit_trainable, st.epoch, blocks)
            if st.batches is None:
                st.batches, st.step, st.loss_sum = _batch_order(encoded, cfg, rng), 0, 0.0
            while st.step < len(st.batches):
                idx = st.batches[st.step]
                mine, real = distributed.shard(idx)  # this rank's rows of the global batch
                batch = tokenizer.pad([encoded[i] for i in mine], return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                # the mean over this rank's rows, weighted so that DDP's average over ranks is the global batch's mean
                y = labels[mine].to(device)
                if allowed is None:
                    loss = par.model(**batch, labels=y).loss
                else:  # multi-task: each row's softmax runs over its own task's labels only
                    loss = torch.nn.functional.cross_entropy(multitask.mask_logits(par.model(**batch).logits, y, allowed), y)
                loss = loss * (real * distributed.world_size() / len(idx))
                par.backward(loss)
                par.step(cfg.train.max_grad_norm)
                st.loss_sum += distributed.all_reduce_mean(loss.detach()).item()
                st.seen += len(idx)
                st.step += 1
                progress.update(task, advance=1, info=f"epoch {st.epoch}/{cfg.train.epochs} loss {st.loss_sum / st.step:.4f}")
                if cfg.train.checkpoint_every and st.step % cfg.train.checkpoint_every == 0 and distributed.is_main():
                    save_checkpoint(checkpoint, identity, st, model, optimizer, scheduler, rng)
            st.train_seconds += time.perf_counter() - epoch_start
            val = _validate(model, tokenizer, cfg, data, val_texts, val_pairs, device, scaling)
            stop = distributed.broadcast(_end_epoch(st, cfg, model, val, time.perf_counter() - epoch_start, progress.console))
            if on_epoch is not None:
                on_epoch(st.epoch - 1, val[cfg.eval.primary])
            if cfg.train.checkpoint_every and distributed.is_main():
                save_checkpoint(checkpoint, identity, st, model, optimizer, scheduler, rng)
            if stop:
                break
    model.load_state_dict(st.best_state, strict=False)
    if distributed.is_main():
        _save(model, tokenizer, cfg, data, out_dir, st.history, st.best_epoch, scaling)
        checkpoint.unlink(missing_ok=True)  # the finished model supersedes it
    distributed.barrier()
    return TrainResult(
        adapter_dir=out_dir, history=st.history, best_epoch=st.best_epoch, best_score=float(st.best_score),
        stopped_early=len(st.history) < cfg.train.epochs, trainable_params=trainable, total_params=total,
        seconds=round(time.perf_counter() - started, 2), train_examples_per_second=round(st.seen / max(st.train_seconds, 1e-9), 2),
        peak_memory_mb=_peak_memory_mb(device),
    )


def target_scaling(data) -> dict[str, float]:
    """Mean and standard deviation of the training target; the network learns ``(y - mean) / std``.

    Why: the new head starts from small random weights, so the untrained model outputs values close
    to 0. A target in the hundreds (prices, durations) would make the first
    squared errors around 10^4, their gradients would swamp the pretrained weights (clipping
    then throws most of each step away), and the head would spend its epochs just learning the
    offset. On the standardised scale the initial output is already a sensible guess (the mean),
    the loss starts near 1 whatever the units, and the learning rates that work for classification
    work here too. Predictions are mapped back with ``value * std + mean`` (``TrainedModel.predict``),
    and both numbers are saved in ``tunekit.json`` so the server does the same.
    """
    y = np.asarray(list(data.train["label"]), dtype=float)
    std = float(y.std())
    return {"mean": float(y.mean()), "std": std if std > 0 else 1.0}


def _train_labels(data, scaling: dict[str, float] | None) -> torch.Tensor:
    """Label ids (classification) or the standardised float target (regression) of every training row."""
    if scaling is None:
        return torch.tensor(list(data.train["label"]))
    y = np.asarray(list(data.train["label"]), dtype=np.float32)
    return torch.tensor((y - scaling["mean"]) / scaling["std"], dtype=torch.float32)


def _validate(model, tokenizer, cfg: TunekitConfig, data, texts: list[str], pairs: list[str] | None, device,
              scaling: dict[str, float] | None) -> dict:
    """The validation metrics of the model as it is now (regression: in the target's own units).

    With several processes each predicts a share of the rows; every rank gets all predictions, so
    all take the same early-stopping decision."""
    if scaling is not None:
        raw = distributed.gather_rows(lambda t, p: predict_values(model, tokenizer, t, p, cfg.model.max_length, cfg.train.eval_batch_size, device),
                                      texts, pairs)
        values = raw.astype(np.float64) * scaling["std"] + scaling["mean"]
        return regression_metrics(np.asarray(list(data.validation["label"]), dtype=float), values)
    probs = distributed.gather_rows(lambda t, p: predict_proba(model, tokenizer, t, p, cfg.model.max_length, cfg.train.eval_batch_size, device),
                                    texts, pairs)
    probs = multitask.restrict_split(probs, data, data.validation)
    return classification_metrics(np.asarray(list(data.validation["label"])), probs.argmax(1), data.labels)


def _init_from(model, cfg: TunekitConfig, labels: list[str], console) -> None:
    """Start from an earlier model's trained weights (same base and method); its head only when
    it was trained for the same labels, since a head for other labels means nothing here."""
    from safetensors.torch import load_file

    source = cfg.path(cfg.model.init_from)
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise TunekitError(f"model.init_from: {source} is not a tunekit model directory ({MANIFEST} missing)")
    info = json.loads(manifest_path.read_text())
    if info["base_model"]["id"] != cfg.model.base:
        raise TunekitError(f"model.init_from: {source} was trained on base {info['base_model']['id']!r}, this config uses {cfg.model.base!r}")
    theirs, ours = info["config"]["method"], cfg.method.model_dump(mode="json")
    if theirs != ours:
        raise TunekitError(f"model.init_from: {source} was trained with method {theirs}, this config has {ours}; use the same method and options")
    weights = source / ("adapter_model.safetensors" if (source / "adapter_config.json").is_file() else "model.safetensors")
    state = load_file(str(weights))
    keep_head = info["labels"] == labels and info.get("task", "classification") == cfg.task
    if not keep_head:
        state = {k: v for k, v in state.items() if not any(part in HEAD_NAMES for part in k.split("."))}
    if (source / "adapter_config.json").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state, strict=False)
    if console is not None:
        console.print(f"  started from {source} ({len(state)} tensors; head {'kept' if keep_head else 'new: the labels or the task differ'})")


def _end_epoch(st: LoopState, cfg: TunekitConfig, model, val: dict, seconds: float, console) -> bool:
    """Record the epoch, keep the best weights; True when early stopping ends training.

    "Better" follows the primary metric's direction: higher, or lower for the error metrics.
    """
    score = val[cfg.eval.primary]
    n_batches = len(st.batches)
    second = "accuracy" if "accuracy" in val else ("r2" if cfg.eval.primary != "r2" else "rmse")
    st.history.append({"epoch": st.epoch, "train_loss": st.loss_sum / n_batches, f"val_{cfg.eval.primary}": score,
                       f"val_{second}": val[second], "seconds": round(seconds, 2)})
    better = score < st.best_score if lower_is_better(cfg.eval.primary) else score > st.best_score
    console.print(f"  epoch {st.epoch}: train loss {st.loss_sum / n_batches:.4f}, validation {cfg.eval.primary} {score:.4f}"
                  + ("  (best so far)" if better else ""))
    best_state = lambda: {k: v.detach().clone() for k, v in model.state_dict().items() if _trainable_key(model, k)}
    return keep_best(st, cfg, score, better, best_state, console, f"better validation {cfg.eval.primary}")


def keep_best(st: LoopState, cfg: TunekitConfig, score: float, better: bool, best_state, console, what: str) -> bool:
    """After an epoch's validation (both loops): keep the weights (``best_state()``) when the epoch is
    the best so far, move to the next epoch, and say whether early stopping ends training."""
    if better:
        st.best_score, st.best_epoch, st.stale = score, st.epoch, 0
        st.best_state = best_state()
    else:
        st.stale += 1
    st.epoch, st.batches = st.epoch + 1, None
    if cfg.train.early_stopping_patience and st.stale >= cfg.train.early_stopping_patience:
        console.print(f"  early stop: no {what} for {st.stale} epochs; keeping epoch {st.best_epoch}")
        return True
    return False


def save_checkpoint(path: Path, identity: dict, st: LoopState, model, optimizer, scheduler, rng: np.random.Generator) -> None:
    """Everything needed to continue bit for bit, written atomically (a crash mid-write leaves the
    previous checkpoint intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        **identity, "loop": vars(st), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "model": {k: v for k, v in model.state_dict().items() if _trainable_key(model, k)},
        "rng": {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state, "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by ``save_checkpoint``, loaded with ``weights_only=True``: tensors, plain
    Python values and NumPy arrays (the batch order, the RNG state) only, so a file planted in the run
    folder cannot run code when ``--resume`` loads it."""
    import numpy

    multiarray = numpy._core.multiarray if hasattr(numpy, "_core") else numpy.core.multiarray
    dtypes = [type(numpy.dtype(t)) for t in ("bool", "int32", "int64", "uint32", "uint64", "float32", "float64")]
    try:
        with torch.serialization.safe_globals([multiarray._reconstruct, multiarray.scalar, numpy.ndarray, numpy.dtype, *dtypes]):
            return torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, say which file and what to do
        raise TunekitError(f"cannot resume from {path}: it is not a checkpoint tunekit can load safely ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:300]}). Delete it and start a new run (without --resume).") from None


def _resume(path: Path, identity: dict, model, optimizer, scheduler, rng: np.random.Generator) -> LoopState:
    if not path.is_file():
        raise TunekitError(f"nothing to resume: no checkpoint at {path} (the run finished, or never reached a checkpoint; "
                           "set train.checkpoint_every to checkpoint more often)")
    state = load_checkpoint(path)
    for key, value in identity.items():
        if state[key] != value:
            raise TunekitError(f"cannot resume from {path}: its {key.replace('_', ' ')} is {state[key][:16]} but this run's is "
                               f"{value[:16]}; the data or config changed since it was written. Start a new run instead.")
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    rng.bit_generator.state = state["rng"]["numpy"]
    random.setstate(state["rng"]["python"])
    return LoopState(**state["loop"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _tokenize(tokenizer, ds, max_length: int) -> list[dict]:
    """Tokenise every row once (truncated, unpadded); batches are padded when they are drawn."""
    pairs = text_pairs(ds)
    enc = tokenizer(list(ds["text"]), pairs, truncation="longest_first" if pairs else True, max_length=max_length)
    keys = list(enc.keys())
    return [{k: enc[k][i] for k in keys} for i in range(len(ds))]


def _batch_order(encoded: list[dict], cfg: TunekitConfig, rng: np.random.Generator) -> list[np.ndarray]:
    from tunekit.train.batching import batch_order

    return batch_order([len(e["input_ids"]) for e in encoded], cfg.train.batch_size, rng, cfg.train.group_by_length)


def _optimizer(model, cfg: TunekitConfig, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    blocks = schedules.n_blocks(model)
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_head = any(part in HEAD_NAMES for part in name.split("."))
            lr = cfg.head_learning_rate if is_head else cfg.learning_rate * schedules.layer_scale(name, blocks, cfg.train.layer_lr_decay)
            groups.setdefault((lr, param.ndim >= 2), []).append(param)  # no decay on biases and LayerNorm
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": lr, "weight_decay": cfg.train.weight_decay if decays else 0.0}
         for (lr, decays), params in groups.items()],
        lr=cfg.learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def _trainable_key(model, key: str) -> bool:
    """Whether a state-dict entry is one the method trains (what checkpoints and the best epoch keep)."""
    return key in model._tunekit_trainable


def _quiet():
    """The console of a rank other than 0: rank 0 alone reports progress."""
    from rich.console import Console

    return Console(quiet=True)




def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(rss_high_water_mb(), 1)


def rss_high_water_mb() -> float:
    """This process's peak resident memory. Not ``ru_maxrss``: a spawned process (``compare-methods``
    trains each method in one) begins as a fork of its parent, and Linux keeps that fork's resident
    size in ``ru_maxrss`` across the exec, so it would count the parent's memory as this process's.
    ``VmHWM`` starts afresh."""
    import resource
    import sys

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def _save(model, tokenizer, cfg: TunekitConfig, data, out_dir: Path, history: list[dict], best_epoch: int,
          scaling: dict[str, float] | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    manifest = {
        "format_version": 1,
        "task": cfg.task,
        "name": cfg.name,
        "method": cfg.method.kind,
        "base_model": {"id": cfg.model.base, "resolved": resolve_base(cfg.model.base), "revision": cfg.model.revision},
        "labels": data.labels,
        **({"tasks": data.tasks} if getattr(data, "multitask", False) else {}),  # multi-task: label ids per task (tunekit.data.multitask)
        **({"target": scaling} if scaling is not None else {}),  # regression: outputs are (y - mean) / std
        "max_length": cfg.model.max_length,
        "text_pair": cfg.data.text_pair_column is not None,
        "data_fingerprint": data.fingerprint,
        "test_fingerprint": data.test_fingerprint,
        "config": cfg.model_dump(mode="json"),
        "config_hash": cfg.hash(),
        "history": history,
        "best_epoch": best_epoch,
        "git_commit": git_commit(cfg.path(".")),
        "versions": package_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": {},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))


def update_manifest(adapter_dir: Path, **fields) -> dict:
    """Add fields (e.g. test metrics after evaluation) to an adapter's ``tunekit.json``."""
    path = adapter_dir / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


