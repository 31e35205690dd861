"""The training loop, one for every task: the task supplies the model, the loss and the validation.

A plain PyTorch loop, no Trainer. Each epoch draws a batch order (length-grouped with
``train.group_by_length``), and each optimisation step takes ``train.gradient_accumulation_steps``
micro-batches of ``train.batch_size`` rows. The loss of a micro-batch is the task's summed loss
(over rows, or over trained tokens for generation) divided by the number of those units in the whole
optimisation step, so accumulating gives the same update as one large batch and no row or token
counts more than another. Every epoch ends with a validation; the best epoch's trained weights are
kept, training stops early when validation stops improving (``train.early_stopping_patience``), and
the task writes the model folder.

Several processes (``tunekit run --nproc N``, ``torchrun``, ``accelerate launch``) train
data-parallel on the same global batches, in the same order, as one process: each rank takes rows
``rank::world`` of every batch and the loss is weighted so that DDP's average of the ranks'
gradients is the global batch's (``train.distributed``). Under ``accelerate launch`` with an FSDP or
DeepSpeed config the model is sharded by accelerate (tasks whose objective is ``shardable``).

The task's part is an ``Objective`` (``train.labelled`` for classification and regression,
``train.causal`` for generation); everything else (checkpointing, the schedule, precision,
accumulation, early stopping, progress) is here, once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from tunekit import methods
from tunekit.artifacts import Manifest, git_commit, package_versions
from tunekit.config import TunekitConfig
from tunekit.data.prepared import Prepared
from tunekit.errors import TunekitError
from tunekit.models import gguf, resolve_base
from tunekit import progress as progress_events
from tunekit.progress import bar as progress_bar
from tunekit.train import checkpoint, distributed, optimizer, schedules
from tunekit.train.batching import batch_order

__all__ = ["Objective", "TrainResult", "Validation", "adapt", "fit"]


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
    train_tokens_per_second: float = field(default=0.0)  # real (non-padding) tokens per second
    trained_tokens: int = field(default=0)  # real (non-padding) tokens trained on, over every epoch and rank (a job's `trained_tokens`)


@dataclass
class Validation:
    """One epoch's validation, as the task measured it."""

    score: float   # what early stopping and hyperparameter search follow (in the objective's direction)
    fields: dict   # what the epoch's history row records (``val_...``)
    line: str      # what the console prints after "validation "


class Objective(Protocol):
    """A task's part of training (see ``train.labelled`` and ``train.causal``)."""

    model: torch.nn.Module   # the base model with the method applied, on its device
    device: torch.device
    lengths: list[int]       # the length of every training row: batches are drawn over these indices
    lower_is_better: bool    # the direction of ``Validation.score``
    shardable: bool          # whether FSDP / DeepSpeed may shard the model
    improvement: str         # how the console names an improvement ("lower validation loss")
    fingerprint: str         # the training data's fingerprint: a checkpoint of other data is refused

    def setup(self, par: distributed.Parallel, console) -> None:
        """Last decisions once the model is wrapped for this run's processes (packing, for one)."""

    def count(self, rows: np.ndarray) -> int:
        """The units the loss of ``rows`` is a sum over: rows, or trained tokens."""

    def loss(self, model, rows: np.ndarray) -> tuple[torch.Tensor, int]:
        """The summed loss over ``rows`` through ``model`` (DDP-wrapped or not), and the real tokens it read."""

    def validate(self, par: distributed.Parallel) -> Validation:
        """The validation score of the model as it is now, the same on every rank."""

    def save(self, model, out_dir: Path, history: list[dict], best_epoch: int, state_dict: dict | None) -> None:
        """Write the model folder; ``state_dict``: the weights to write instead of the model's own."""


def adapt(model, cfg: TunekitConfig, device: torch.device, task: str):
    """The loaded base, made ready to train: gradient checkpointing where asked, the method applied,
    moved to ``device`` (unless 4-bit weights, or FSDP / DeepSpeed, place it themselves)."""
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = methods.apply(model, cfg.method, task=task)
    if not methods.SPECS[cfg.method.kind].quantized_base and not (distributed.world_size() > 1 and distributed.sharding()):
        model.to(device)
    return model


def fit(cfg: TunekitConfig, objective: Objective, out_dir: Path, console, resume: bool = False, on_epoch=None) -> TrainResult:
    """Train ``objective.model``, keep the best epoch, write it to ``out_dir`` (see the module docstring).

    With ``train.checkpoint_every`` the loop state is saved every N optimisation steps and at every
    epoch end to ``checkpoint.pt`` beside ``out_dir``; ``resume=True`` continues from it.
    ``on_epoch(epoch, score)`` is called after each validation (hyperparameter search prunes there).
    """
    model, device, train_cfg = objective.model, objective.device, cfg.train
    trainable, total = methods.count_parameters(model)
    model._tunekit_trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # before any schedule freezes some
    blocks = schedules.n_blocks(model)
    accumulate = train_cfg.gradient_accumulation_steps
    micro_per_epoch = -(-len(objective.lengths) // train_cfg.batch_size)
    steps_per_epoch = -(-micro_per_epoch // accumulate)
    # DDP when there are several processes; gradual unfreezing leaves some trainable weights without gradients
    par = distributed.parallel(model, lambda m: optimizer.build(m, cfg, steps_per_epoch * train_cfg.epochs),
                               find_unused=train_cfg.gradual_unfreezing, shardable=objective.shardable,
                               micro_rows=-(-train_cfg.batch_size // distributed.world_size()), max_grad_norm=train_cfg.max_grad_norm)
    objective.setup(par, console)
    autocast = optimizer.autocast(cfg, device)
    rng = np.random.default_rng(train_cfg.seed)  # the same on every rank: the same batches in the same order
    path = out_dir.parent / "checkpoint.pt"
    identity = {"data_fingerprint": objective.fingerprint, "config_hash": cfg.hash()}
    keep = lambda: par.state(model._tunekit_trainable)  # noqa: E731 - every rank calls it: FSDP gathers the shards
    saves = train_cfg.checkpoint_every and distributed.is_main() and not par.sharded

    def save_checkpoint() -> None:
        checkpoint.save(path, identity, st, keep(), par.optimizer, par.scheduler, rng)

    st = checkpoint.resume(path, identity, model, par.optimizer, par.scheduler, rng) if resume else \
        checkpoint.LoopState(best_score=np.inf if objective.lower_is_better else -np.inf)
    started = time.perf_counter()
    with progress_bar(console) as progress:
        bar = progress.add_task("train", total=micro_per_epoch * train_cfg.epochs,
                                completed=(st.epoch - 1) * micro_per_epoch + st.step, info="")
        while st.epoch <= train_cfg.epochs:
            epoch_start = time.perf_counter()
            par.model.train()
            if train_cfg.gradual_unfreezing:
                schedules.unfreeze_for_epoch(model, model._tunekit_trainable, st.epoch, blocks)
            if st.batches is None:
                st.batches, st.step, st.loss_sum = batch_order(objective.lengths, train_cfg.batch_size, rng, train_cfg.group_by_length), 0, 0.0
            while st.step < len(st.batches):
                group = st.batches[st.step : st.step + accumulate - st.step % accumulate]
                counts = [objective.count(idx) for idx in group]  # per micro-batch, on every rank
                units = sum(counts)  # over the global step
                for k, idx in enumerate(group):
                    mine, real = distributed.shard(idx)  # this rank's rows of the global batch
                    with par.no_sync(k == len(group) - 1):  # DDP all-reduces on the step's last micro-batch only
                        with autocast:
                            loss_sum, tokens = objective.loss(par.model, mine)
                        loss_sum = loss_sum * (1.0 if real else 0.0)
                        # DDP averages over ranks; times the world size that is the sum over the global step
                        par.backward(loss_sum * distributed.world_size() / max(units, 1))
                    st.loss_sum += distributed.all_reduce_sum(loss_sum.detach()).item() / max(counts[k], 1)
                    st.tokens += tokens if real else 0
                    st.seen += len(idx)
                    st.step += 1
                    progress.update(bar, advance=1, info=f"epoch {st.epoch}/{train_cfg.epochs} loss {st.loss_sum / st.step:.4f}")
                par.step(train_cfg.max_grad_norm)
                progress_events.emit("step", step=(st.epoch - 1) * steps_per_epoch + -(-st.step // accumulate),
                                     total_steps=steps_per_epoch * train_cfg.epochs, epoch=st.epoch, train_loss=st.loss_sum / st.step)
                if saves and (st.step // accumulate) % train_cfg.checkpoint_every == 0:
                    save_checkpoint()
            epoch_train_seconds = time.perf_counter() - epoch_start
            st.train_seconds += epoch_train_seconds
            with autocast:
                val = objective.validate(par)
            stop = distributed.broadcast(_end_epoch(st, cfg, objective, val, keep, time.perf_counter() - epoch_start, epoch_train_seconds,
                                                    progress.console))
            if on_epoch is not None:
                on_epoch(st.epoch - 1, val.score)
            if saves:
                save_checkpoint()
            progress_events.emit("epoch", **st.history[-1], step=st.history[-1]["epoch"] * steps_per_epoch, best_epoch=st.best_epoch,
                                 checkpointed=bool(saves))
            if stop:
                break
    if not par.sharded:
        model.load_state_dict(st.best_state, strict=False)
    if distributed.is_main():  # sharded: the gathered best weights are saved as they are
        objective.save(model, out_dir, st.history, st.best_epoch, st.best_state if par.sharded else None)
        path.unlink(missing_ok=True)  # the finished model supersedes it
    tokens = int(distributed.all_reduce_sum(torch.tensor(st.tokens, device=device)).item())
    distributed.barrier()
    return TrainResult(
        adapter_dir=out_dir, history=st.history, best_epoch=st.best_epoch, best_score=float(st.best_score),
        stopped_early=len(st.history) < train_cfg.epochs, trainable_params=trainable, total_params=total,
        seconds=round(time.perf_counter() - started, 2), train_examples_per_second=round(st.seen / max(st.train_seconds, 1e-9), 2),
        peak_memory_mb=peak_memory_mb(device), train_tokens_per_second=round(tokens / max(st.train_seconds, 1e-9), 1), trained_tokens=tokens,
    )


def _end_epoch(st: checkpoint.LoopState, cfg: TunekitConfig, objective: Objective, val: Validation, keep, seconds: float,
               train_seconds: float, console) -> bool:
    """Record the epoch (``seconds`` with its validation, ``train_seconds`` without: what a time-to-score
    comparison reads), keep the best weights (``keep()``), move on; True when early stopping ends training."""
    n = len(st.batches)
    st.history.append({"epoch": st.epoch, "train_loss": st.loss_sum / n, **val.fields, "seconds": round(seconds, 2),
                       "train_seconds": round(train_seconds, 2)})
    better = val.score < st.best_score if objective.lower_is_better else val.score > st.best_score
    console.print(f"  epoch {st.epoch}: train loss {st.loss_sum / n:.4f}, validation {val.line}" + ("  (best so far)" if better else ""))
    if better:  # the score is the same on every rank, so under FSDP every rank gathers
        st.best_score, st.best_epoch, st.stale, st.best_state = val.score, st.epoch, 0, keep()
    else:
        st.stale += 1
    st.epoch, st.batches = st.epoch + 1, None
    if cfg.train.early_stopping_patience and st.stale >= cfg.train.early_stopping_patience:
        console.print(f"  early stop: no {objective.improvement} for {st.stale} epochs; keeping epoch {st.best_epoch}")
        return True
    return False


def check_sharded(cfg: TunekitConfig, resume: bool) -> None:
    """What the FSDP / DeepSpeed path does not do, said before any weights load."""
    kind = distributed.sharding()
    if distributed.world_size() == 1 or kind is None:
        return
    if resume:
        raise TunekitError(f"--resume is not supported under accelerate's {kind}: its checkpoints would hold one rank's shard only; "
                           "start a new run, or train with a DDP config (examples/accelerate/ddp.yaml)")
    if kind == "deepspeed" and cfg.train.gradient_accumulation_steps > 1:
        raise TunekitError("train.gradient_accumulation_steps must be 1 under DeepSpeed (its engine steps after every backward "
                           f"pass), got {cfg.train.gradient_accumulation_steps}; raise train.batch_size instead: it is the global "
                           "batch, split across the processes")


def manifest(cfg: TunekitConfig, data: Prepared, history: list[dict], best_epoch: int, **task_fields) -> Manifest:
    """The ``tunekit.json`` of a trained model: what every task records (base, data, config,
    lineage, history) and the task's own ``task_fields`` (labels, target scaling, template)."""
    from datetime import UTC, datetime

    return Manifest(
        task=cfg.task, name=cfg.name, method=cfg.method.kind,
        base_model={"id": cfg.model.base, "resolved": resolve_base(cfg.model.base), "revision": cfg.model.revision,
                    **({"origin": origin} if (origin := gguf.base_origin(cfg.model.base)) else {})},
        max_length=cfg.model.max_length, data_fingerprint=data.fingerprint, test_fingerprint=data.test_fingerprint,
        config=cfg.model_dump(mode="json"), config_hash=cfg.hash(), history=history, best_epoch=best_epoch,
        git_commit=git_commit(cfg.path(".")), versions=package_versions(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), metrics={}, **task_fields,
    )


def peak_memory_mb(device: torch.device) -> float:
    """The peak memory of this run: GPU memory allocated on CUDA, else this process's peak resident memory."""
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
