"""Data-parallel training across processes: one per GPU, or several CPU processes with gloo.

Every process runs the same command. ``init`` joins the process group when the environment says
there are several processes (``WORLD_SIZE`` > 1, as set by ``torchrun``, ``accelerate launch`` or
``tunekit run --nproc N``, whose launcher is ``launch``). The training loops then:

- draw the same batch order on every rank (the shuffling RNG is seeded identically) and give rank
  ``r`` rows ``r::world`` of each global batch of ``train.batch_size`` rows (``shard``), so the
  batches, their order and the learning-rate schedule are those of a one-process run;
- weight each rank's loss so that DDP's average of the ranks' gradients is the gradient of the
  whole global batch (``shard`` returns how many rows are this rank's);
- validate on a share of the validation rows per rank and combine the results, so every rank
  takes the same early-stopping decision; only rank 0 writes checkpoints and the model.

With ``accelerate launch`` and an FSDP or DeepSpeed config (``ACCELERATE_USE_FSDP`` /
``ACCELERATE_USE_DEEPSPEED``), ``parallel`` hands the model and optimizer to
``accelerate.Accelerator().prepare``, which shards them across the GPUs (generation only: encoders
fit on one GPU, so classification is replicated DDP). Configs are in ``examples/accelerate/``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from tunekit.errors import TunekitError

__all__ = ["Parallel", "all_reduce_mean", "all_reduce_sum", "barrier", "broadcast", "gather_rows", "init", "is_main",
           "launch", "local_device", "main_first", "parallel", "rank", "shard", "sharding", "world_size"]

TIMEOUT = timedelta(minutes=60)  # one rank may validate or save while the others wait


def init() -> bool:
    """Join the process group when this is one of several processes; True when training is distributed.

    Safe to call again. The backend is NCCL with CUDA (each process on GPU ``LOCAL_RANK``), else gloo.
    Under accelerate's FSDP or DeepSpeed, accelerate sets the group up its own way (gloo beside NCCL
    for CPU offload, DeepSpeed's communicator).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if sharding() is not None:
        from accelerate import PartialState

        PartialState(timeout=TIMEOUT)
    else:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)
    atexit.register(_shutdown)
    return True


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sharding() -> str | None:
    """``"fsdp"`` or ``"deepspeed"`` when ``accelerate launch`` was given such a config, else None."""
    for kind, variable in (("fsdp", "ACCELERATE_USE_FSDP"), ("deepspeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "false").lower() == "true":
            return kind
    return None


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and talks to the user (rank 0, or the only process)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``device``, made this process's own GPU when several processes share a machine."""
    if device.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first, the other ranks after it, so they find what it wrote (frozen
    splits, caches) instead of writing the same files at the same time."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the ranks (``x`` itself in one process)."""
    return all_reduce_sum(x) / world_size() if world_size() > 1 else x


def broadcast(value):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(rows: np.ndarray, rank_: int | None = None, world: int | None = None) -> tuple[np.ndarray, int]:
    """This rank's rows of a global batch (rows ``rank::world``) and how many of them are real.

    A rank left without rows (a last batch smaller than the world) gets the batch's first row and
    0 real rows: it still runs forward and backward, weighted by 0, so the gradient all-reduce
    happens on every rank.
    """
    r, w = rank() if rank_ is None else rank_, world_size() if world is None else world
    mine = rows[r::w]
    return (mine, len(mine)) if len(mine) else (rows[:1], 0)


def gather_rows(fn: Callable, *columns: list | None) -> np.ndarray:
    """``fn(*columns)``, computed on a share of the rows per rank and put back in order on every rank.

    ``columns`` are lists of equal length (``None`` passes through); ``fn`` returns an array
    with one leading entry per row.
    """
    w = world_size()
    if w == 1:
        return fn(*columns)
    mine = [c[rank()::w] if c is not None else None for c in columns]
    part = fn(*mine) if len(mine[0]) else None
    parts: list = [None] * w
    dist.all_gather_object(parts, part)
    first = next(p for p in parts if p is not None)
    out = np.empty((len(columns[0]), *first.shape[1:]), dtype=first.dtype)
    for r, p in enumerate(parts):
        if p is not None:
            out[r::w] = p
    return out


class Parallel:
    """The model as the training loop drives it: plain, in DistributedDataParallel, or prepared by
    accelerate (FSDP, DeepSpeed). ``model`` is what forward passes go through; ``eval_model`` is
    what validation uses (the bare model where each rank holds all weights)."""

    def __init__(self, module, model, optimizer, scheduler, accelerator=None):
        self.module, self.model, self.optimizer, self.scheduler, self.accelerator = module, model, optimizer, scheduler, accelerator

    @property
    def sharded(self) -> bool:
        """Whether weights are spread over the ranks, so every rank must run the same forward passes."""
        return self.accelerator is not None

    @property
    def eval_model(self):
        return self.model if self.sharded else self.module

    def no_sync(self, sync: bool):
        """Skip DDP's gradient all-reduce on micro-batches before the last of an optimisation step."""
        if sync or not isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def step(self, max_grad_norm: float) -> None:
        """Clip the (already averaged) gradients, step the optimizer and the schedule, clear gradients."""
        if self.accelerator is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), max_grad_norm)  # DeepSpeed clips inside its engine
        else:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state(self, keys: set[str]) -> dict:
        """A copy of the weights named in ``keys``; sharded weights are gathered (to rank 0 under FSDP:
        the other ranks get an empty dict), so every rank must call it."""
        full = self.accelerator.get_state_dict(self.model) if self.accelerator is not None else self.module.state_dict()
        return {k: v.detach().clone() for k, v in full.items() if k in keys}


def parallel(model, make_optimizer: Callable, *, find_unused: bool = False, micro_rows: int = 1,
             max_grad_norm: float = 1.0, shardable: bool = False) -> Parallel:
    """Wrap ``model`` for this run's processes; ``make_optimizer(model)`` returns ``(optimizer, scheduler)``.

    One process: the model as it is. Several: DDP (``find_unused`` when some trainable weights get
    no gradient in a step, as with gradual unfreezing). Under accelerate's FSDP or DeepSpeed
    (``shardable`` loops only): ``Accelerator().prepare``; FSDP1 needs the optimizer built on the
    wrapped model, FSDP2 and DeepSpeed take both together. The schedule stays ours, stepped once
    per global step (accelerate's scheduler wrapper would step it once per process).
    """
    kind = sharding() if world_size() > 1 else None
    if kind is None:
        optimizer, scheduler = make_optimizer(model)
        if world_size() == 1:
            return Parallel(model, model, optimizer, scheduler)
        ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
        return Parallel(model, ddp, optimizer, scheduler)
    if not shardable:
        raise TunekitError(f"accelerate launch with a {kind} config: FSDP and DeepSpeed are for task: generation; "
                           "classification and regression models fit on one GPU, so use a DDP config "
                           "(examples/accelerate/ddp.yaml) or `tunekit run CONFIG --nproc N`")
    return _accelerate(model, make_optimizer, kind, micro_rows, max_grad_norm)


def _accelerate(model, make_optimizer: Callable, kind: str, micro_rows: int, max_grad_norm: float) -> Parallel:
    from accelerate import Accelerator

    accelerator = Accelerator()  # the FSDP / DeepSpeed settings come from accelerate launch's environment
    if kind == "deepspeed":
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            {"train_micro_batch_size_per_gpu": micro_rows, "gradient_accumulation_steps": 1, "gradient_clipping": max_grad_norm})
    if kind == "fsdp" and not accelerator.is_fsdp2:
        wrapped = accelerator.prepare(model)
        optimizer, scheduler = make_optimizer(wrapped)
        return Parallel(model, wrapped, accelerator.prepare(optimizer), scheduler, accelerator)
    optimizer, scheduler = make_optimizer(model)
    wrapped, prepared = accelerator.prepare(model, optimizer)
    return Parallel(model, wrapped, prepared, scheduler, accelerator)


def launch(n: int, argv: list[str], module: str | None = "tunekit.cli") -> int:
    """Run ``python -m module *argv`` (or the script ``argv[0]`` when ``module`` is None) in ``n``
    processes on this machine, as ``torchrun --nproc-per-node n`` would; returns the exit code.

    Rank 0 keeps this terminal; the other ranks' output is kept aside and shown only when that
    rank fails. When any rank fails the others are stopped (they would wait for it forever) and
    its exit code is returned; otherwise rank 0's.
    """
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(n),
           "LOCAL_WORLD_SIZE": str(n), "GROUP_RANK": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))}
    command = [sys.executable, *(["-m", module] if module else []), *argv]
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as files:
        logs = [None] + [files.enter_context(tempfile.TemporaryFile()) for _ in range(n - 1)]
        try:
            for r, log in enumerate(logs):
                procs.append(subprocess.Popen(command, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                                              stdout=subprocess.DEVNULL if log else None, stderr=log))
            return _wait(procs, logs)
        finally:
            for p in procs:
                _stop(p)


def _wait(procs: list[subprocess.Popen], logs: list) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = next((r for r, c in enumerate(codes) if c not in (None, 0)), None)
        if failed is not None and not (failed == 0 and all(c is not None for c in codes)):
            for p in procs:
                _stop(p)
            if logs[failed] is not None:
                logs[failed].seek(0)
                sys.stderr.write(f"tunekit: rank {failed} of {len(procs)} failed (exit code {codes[failed]}); its output:\n")
                sys.stderr.write(logs[failed].read().decode(errors="replace")[-20_000:])
                sys.stderr.flush()
            return codes[failed]
        if all(c is not None for c in codes):
            return codes[0]
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
