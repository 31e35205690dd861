"""Supervised fine-tuning of causal LMs: the same loop as classification, over packed token rows.

Each optimisation step takes ``train.batch_size`` examples (length-grouped like classification)
and packs them, first-fit decreasing, into rows of at most ``model.max_length`` tokens. Position
ids restart at 0 for every example and no attention mask is passed, which is how transformers
recognises packed sequences and builds a block-diagonal causal mask: examples share a row but
never attend to each other (``test_packing_keeps_examples_apart`` checks the loss equals the
unpacked one). No compute goes to padding beyond the tail of each row. Prompt-based methods add
virtual tokens per row, not per example, so they (and ``train.packing: false``) use ordinary
right-padded batches instead.

The loss is the summed cross-entropy over trained tokens (``templates.encode``'s mask: assistant
turns and their EOS) divided by the number of trained tokens in the whole optimisation step, so
gradient accumulation gives the same update as one large batch, and long answers are not
down-weighted against short ones. With several processes each rank trains on its rows of every
batch and the count of trained tokens is that of the whole global batch, so the DDP-averaged
gradient (times the number of ranks) is the one-process gradient. Under ``accelerate launch``
with an FSDP or DeepSpeed config the model is sharded by accelerate (``train.distributed``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from tunekit import methods
from tunekit.config import TunekitConfig
from tunekit.errors import TunekitError
from tunekit.artifacts import git_commit, package_versions
from tunekit.models import MANIFEST, pick_device, resolve_base
from tunekit.models.causal import load_causal_base
from tunekit.progress import bar as progress_bar
from tunekit.train import (
    LoopState,
    TrainResult,
    _optimizer,
    _peak_memory_mb,
    _quiet,
    _resume,
    distributed,
    keep_best,
    save_checkpoint,
    seed_everything,
)
from tunekit.train.batching import batch_order

PROMPT_METHODS = {"prompt_tuning", "prefix_tuning", "p_tuning"}


def run_causal(cfg: TunekitConfig, data, out_dir: Path, console=None, resume: bool = False, on_epoch=None) -> TrainResult:
    """Train on ``data.encoded['train']``, keep the epoch with the lowest validation loss, write it to ``out_dir``."""
    distributed.init()
    console = console if distributed.is_main() else _quiet()
    _check_sharded(cfg, resume)
    seed_everything(cfg.train.seed)
    device = distributed.local_device(pick_device(cfg.train.device))
    methods.check(cfg.method, device)
    quantized = cfg.method.kind == "qlora"
    model, tokenizer = load_causal_base(cfg.model.base, cfg.model.revision, quantize_4bit=quantized)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = methods.apply(model, cfg.method, task="generation")
    if not quantized and not (distributed.world_size() > 1 and distributed.sharding()):  # FSDP, DeepSpeed place (and shard) weights themselves
        model.to(device)
    trainable, total = methods.count_parameters(model)
    model._tunekit_trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    train = data.encoded["train"]
    accumulate = cfg.train.gradient_accumulation_steps
    micro_per_epoch = -(-len(train) // cfg.train.batch_size)
    steps_per_epoch = -(-micro_per_epoch // accumulate)
    par = distributed.parallel(model, lambda m: _optimizer(m, cfg, steps_per_epoch * cfg.train.epochs), shardable=True,
                               micro_rows=-(-cfg.train.batch_size // distributed.world_size()), max_grad_norm=cfg.train.max_grad_norm)
    optimizer, scheduler, sharded = par.optimizer, par.scheduler, par.sharded
    packing = cfg.train.packing and cfg.method.kind not in PROMPT_METHODS and packing_isolates(par.eval_model, device, console)
    autocast = _autocast(cfg, device)
    rng = np.random.default_rng(cfg.train.seed)  # the same on every rank: the same batches in the same order
    checkpoint = out_dir.parent / "checkpoint.pt"
    identity = {"data_fingerprint": data.fingerprint, "config_hash": cfg.hash()}
    st = _resume(checkpoint, identity, model, optimizer, scheduler, rng) if resume else LoopState()
    if not resume:
        st.best_score = -math.inf  # the score is minus the validation loss: higher is better, like every other score
    tokens_seen = 0
    started = time.perf_counter()
    with progress_bar(console) as progress:
        task = progress.add_task("train", total=micro_per_epoch * cfg.train.epochs,
                                 completed=(st.epoch - 1) * micro_per_epoch + st.step, info="")
        while st.epoch <= cfg.train.epochs:
            epoch_start = time.perf_counter()
            par.model.train()
            if st.batches is None:
                lengths = [len(e.ids) for e in train]
                st.batches, st.step, st.loss_sum = batch_order(lengths, cfg.train.batch_size, rng, cfg.train.group_by_length), 0, 0.0
            while st.step < len(st.batches):
                group = st.batches[st.step : st.step + accumulate - st.step % accumulate]
                n_trained = sum(train[i].trained for idx in group for i in idx)  # over the global batch, on every rank
                for k, idx in enumerate(group):
                    mine, real = distributed.shard(idx)  # this rank's rows of the global batch
                    batch = collate([train[i] for i in mine], cfg.model.max_length, tokenizer.pad_token_id, packing)
                    with par.no_sync(k == len(group) - 1):  # DDP all-reduces on the step's last micro-batch only
                        with autocast:
                            loss_sum = token_loss(par.model, batch, device) * (1.0 if real else 0.0)
                        # DDP averages over ranks; times the world size that is the sum over the global batch
                        par.backward(loss_sum * distributed.world_size() / n_trained)
                    st.loss_sum += distributed.all_reduce_sum(loss_sum.detach()).item() / max(sum(train[i].trained for i in idx), 1)
                    tokens_seen += int(batch["real_tokens"]) if real else 0
                    st.seen += len(idx)
                    st.step += 1
                    progress.update(task, advance=1, info=f"epoch {st.epoch}/{cfg.train.epochs} loss {st.loss_sum / st.step:.4f}")
                par.step(cfg.train.max_grad_norm)
                if cfg.train.checkpoint_every and (st.step // accumulate) % cfg.train.checkpoint_every == 0 and distributed.is_main() and not sharded:
                    save_checkpoint(checkpoint, identity, st, model, optimizer, scheduler, rng)
            st.train_seconds += time.perf_counter() - epoch_start
            with autocast:
                val_loss = _validation_loss(par, data.encoded["validation"], cfg, tokenizer.pad_token_id, device, packing)
            stop = distributed.broadcast(_end_epoch(st, cfg, par, val_loss, time.perf_counter() - epoch_start, progress.console))
            if on_epoch is not None:
                on_epoch(st.epoch - 1, -val_loss)
            if cfg.train.checkpoint_every and distributed.is_main() and not sharded:
                save_checkpoint(checkpoint, identity, st, model, optimizer, scheduler, rng)
            if stop:
                break
    if not sharded:
        model.load_state_dict(st.best_state, strict=False)
    if distributed.is_main():  # sharded: the gathered best weights are saved as they are
        save(model, tokenizer, cfg, data, out_dir, st.history, st.best_epoch, state_dict=st.best_state if sharded else None)
        checkpoint.unlink(missing_ok=True)
    tokens_seen = int(distributed.all_reduce_sum(torch.tensor(tokens_seen, device=device)).item())
    distributed.barrier()
    return TrainResult(
        adapter_dir=out_dir, history=st.history, best_epoch=st.best_epoch, best_score=float(st.best_score),
        stopped_early=len(st.history) < cfg.train.epochs, trainable_params=trainable, total_params=total,
        seconds=round(time.perf_counter() - started, 2), train_examples_per_second=round(st.seen / max(st.train_seconds, 1e-9), 2),
        peak_memory_mb=_peak_memory_mb(device), train_tokens_per_second=round(tokens_seen / max(st.train_seconds, 1e-9), 1),
    )


def _check_sharded(cfg: TunekitConfig, resume: bool) -> None:
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


def _validation_loss(par, encoded: list, cfg: TunekitConfig, pad_id: int, device: torch.device, packing: bool) -> float:
    """The mean validation loss per trained token, the same on every rank.

    Replicated weights (one process, DDP): each rank scores a share of the rows and the sums are
    added up. Sharded weights (FSDP, DeepSpeed): every forward pass needs every rank, so all
    ranks score all rows in step.
    """
    if par.sharded or distributed.world_size() == 1:
        return mean_loss(par.eval_model, encoded, cfg, pad_id, device, packing)
    share = encoded[distributed.rank() :: distributed.world_size()]
    count = sum(e.trained for e in share)
    total = mean_loss(par.eval_model, share, cfg, pad_id, device, packing) * max(count, 1)
    sums = distributed.all_reduce_sum(torch.tensor([total, count], dtype=torch.float64, device=device))
    return float(sums[0] / max(sums[1], 1))


@torch.no_grad()
def packing_isolates(model, device: torch.device, console=None) -> bool:
    """Whether this model keeps packed examples apart: the loss of two short examples packed in
    one row must equal their losses computed apart. Models whose attention ignores restarting
    position ids would let examples attend to each other; they train on padded batches instead."""
    from tunekit.data.conversations import Encoded

    vocab = model.get_input_embeddings().num_embeddings
    a = Encoded([t % vocab for t in (3, 17, 29, 41, 53)], [0, 0, 1, 1, 1])
    b = Encoded([t % vocab for t in (7, 19, 31, 43)], [0, 1, 1, 1])
    was_training = model.training
    model.eval()
    together = token_loss(model, collate([a, b], 16, 0, packing=True), device).item()
    apart = sum(token_loss(model, collate([e], 16, 0, packing=True), device).item() for e in (a, b))
    model.train(was_training)
    ok = math.isclose(together, apart, rel_tol=1e-3, abs_tol=1e-3)
    if not ok and console is not None:
        console.print("  packing off: this model lets packed examples attend to each other; training on padded batches instead")
    return ok


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: group example indices into rows of at most ``capacity`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate(examples: list, capacity: int, pad_id: int, packing: bool) -> dict:
    """Tensors for one micro-batch: ``input_ids``, ``labels`` (-100 where untrained or padding), and
    ``position_ids`` restarting per example (packed) or an ``attention_mask`` (padded)."""
    rows = pack([len(e.ids) for e in examples], capacity) if packing else [[i] for i in range(len(examples))]
    width = max(sum(len(examples[i].ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e = examples[i]
            n = len(e.ids)
            ids[r, at : at + n] = torch.tensor(e.ids)
            labels[r, at : at + n] = torch.tensor([t if m else -100 for t, m in zip(e.ids, e.mask)])
            positions[r, at : at + n] = torch.arange(n)
            attention[r, at : at + n] = 1
            at += n
        positions[r, at:] = torch.arange(width - at)  # padding is one more (never trained) sequence
    batch = {"input_ids": ids, "labels": labels, "real_tokens": int(attention.sum())}
    if packing:
        batch["position_ids"] = positions
    else:
        batch["attention_mask"] = attention
    return batch


def token_loss(model, batch: dict, device: torch.device) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled positions of ``batch``."""
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "position_ids", "attention_mask")}
    logits = model(**inputs, use_cache=False).logits  # with a cache, transformers does not look for packed sequences
    labels = batch["labels"].to(device)
    if logits.shape[1] != labels.shape[1]:  # prompt methods prepend virtual tokens to the logits
        logits = logits[:, -labels.shape[1] :]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                                             ignore_index=-100, reduction="sum")


@torch.no_grad()
def mean_loss(model, encoded: list, cfg: TunekitConfig, pad_id: int, device: torch.device, packing: bool = True) -> float:
    """Mean loss per trained token over ``encoded`` (perplexity is its exponential)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    for start in range(0, len(order), cfg.train.eval_batch_size):
        chunk = [encoded[i] for i in order[start : start + cfg.train.eval_batch_size]]
        total += token_loss(model, collate(chunk, cfg.model.max_length, pad_id, packing), device).item()
        count += sum(e.trained for e in chunk)
    model.train(was_training)
    return total / max(count, 1)


def _end_epoch(st: LoopState, cfg: TunekitConfig, par, val_loss: float, seconds: float, console) -> bool:
    n = len(st.batches)
    score = -val_loss
    st.history.append({"epoch": st.epoch, "train_loss": st.loss_sum / n, "val_loss": val_loss,
                       "val_perplexity": math.exp(min(val_loss, 50)), "seconds": round(seconds, 2)})
    better = score > st.best_score
    console.print(f"  epoch {st.epoch}: train loss {st.loss_sum / n:.4f}, validation loss {val_loss:.4f} "
                  f"(perplexity {math.exp(min(val_loss, 50)):.2f})" + ("  (best so far)" if better else ""))
    # every rank takes the state: FSDP gathers the shards
    return keep_best(st, cfg, score, better, lambda: par.state(par.module._tunekit_trainable), console, "lower validation loss")


def _autocast(cfg: TunekitConfig, device: torch.device):
    """bf16 autocast where asked for (or ``auto`` on a GPU that has bf16), else nothing."""
    want = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not want:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def save(model, tokenizer, cfg: TunekitConfig, data, out_dir: Path, history: list[dict], best_epoch: int,
         state_dict: dict | None = None) -> None:
    """The model directory: PEFT adapter (or full checkpoint), the tokenizer with the template as its
    own ``chat_template``, and ``tunekit.json`` with the template, so any loader renders identically.
    ``state_dict``: the weights to write instead of the model's own (gathered from FSDP shards)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.chat_template = data.template.source
    tokenizer.save_pretrained(out_dir)
    manifest = {
        "format_version": 1, "task": "generation", "name": cfg.name, "method": cfg.method.kind,
        "base_model": {"id": cfg.model.base, "resolved": resolve_base(cfg.model.base), "revision": cfg.model.revision},
        "labels": [], "max_length": cfg.model.max_length, "template": data.template.to_json(),
        "system_prompt": cfg.data.system_prompt, "data_fingerprint": data.fingerprint, "test_fingerprint": data.test_fingerprint,
        "config": cfg.model_dump(mode="json"), "config_hash": cfg.hash(), "history": history, "best_epoch": best_epoch,
        "git_commit": git_commit(cfg.path(".")), "versions": package_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "metrics": {},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
