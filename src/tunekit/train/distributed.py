"""Data-parallel training across processes: one per GPU, or several CPU processes with gloo.

Every process runs the same command. ``init`` joins the process group when the environment says
there are several processes (``WORLD_SIZE`` > 1, as set by ``torchrun``, ``accelerate launch`` or
``tunekit run --nproc N``, whose launcher ``launch`` is torch's elastic launcher). The training
loop then:

- draws the same batch order on every rank (the shuffling RNG is seeded identically) and gives rank
  ``r`` rows ``r::world`` of each global batch of ``train.batch_size`` rows (``shard``), so the
  batches, their order and the learning-rate schedule are those of a one-process run;
- weights each rank's loss so that DDP's average of the ranks' gradients is the gradient of the
  whole global batch (``shard`` returns how many rows are this rank's);
- validates on a share of the validation rows per rank and combines the results, so every rank
  takes the same early-stopping decision; only rank 0 writes checkpoints and the model.

One process trains the plain model. Several go through one path, ``accelerate.Accelerator().prepare``
(``parallel``): DDP by default; with ``accelerate launch`` and an FSDP or DeepSpeed config
(``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``) it shards the model and optimizer across
the GPUs (generation only: encoders fit on one GPU, so classification is replicated DDP). Configs
are in ``examples/accelerate/``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from tunekit.errors import TunekitError

__all__ = ["Parallel", "all_reduce_mean", "all_reduce_sum", "barrier", "broadcast", "gather_rows", "init", "is_main",
           "launch", "local_device", "main_first", "parallel", "rank", "shard", "sharding", "world_size"]

TIMEOUT = timedelta(minutes=60)  # one rank may validate or save while the others wait


def init() -> bool:
    """Join the process group when this is one of several processes; True when training is distributed.

    Safe to call again. accelerate sets the group up (``PartialState``), the same way for DDP, FSDP
    and DeepSpeed: NCCL with CUDA (each process on GPU ``LOCAL_RANK``; gloo beside it for FSDP's CPU
    offload, DeepSpeed's communicator under DeepSpeed), else gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    from accelerate import PartialState

    PartialState(cpu=_cpu(), timeout=TIMEOUT)
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
    """The model as the training loop drives it: plain (one process) or prepared by accelerate
    (DDP, FSDP, DeepSpeed). ``model`` is what forward passes go through; ``module`` the bare model;
    ``eval_model`` what validation uses (the bare model where each rank holds all weights)."""

    def __init__(self, module, model, optimizer, scheduler, accelerator=None, sharded: bool | None = None):
        self.module, self.model, self.optimizer, self.scheduler, self.accelerator = module, model, optimizer, scheduler, accelerator
        self._sharded = accelerator is not None if sharded is None else sharded

    @property
    def sharded(self) -> bool:
        """Whether weights are spread over the ranks, so every rank must run the same forward passes."""
        return self._sharded

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
            self.accelerator.backward(loss)  # accumulation is ours: accelerate's is fixed at 1 step, so it scales nothing
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
        full = self.accelerator.get_state_dict(self.model) if self.sharded else self.module.state_dict()
        return {k: v.detach().clone() for k, v in full.items() if k in keys}


def parallel(model, make_optimizer: Callable, *, find_unused: bool = False, micro_rows: int = 1,
             max_grad_norm: float = 1.0, shardable: bool = False) -> Parallel:
    """Wrap ``model`` for this run's processes; ``make_optimizer(model)`` returns ``(optimizer, scheduler)``.

    One process: the model as it is (no accelerate in the way). Several: ``Accelerator().prepare``,
    which wraps the model in DDP (``find_unused`` when some trainable weights get no gradient in a
    step, as with gradual unfreezing), or under accelerate's FSDP or DeepSpeed (``shardable`` loops
    only) shards it. The loop keeps what makes a step the global batch's: its own micro-batches and
    accumulation (accelerate's is fixed at one step), ``no_sync`` on all but a step's last
    micro-batch, and its own schedule, stepped once per global step (accelerate's scheduler wrapper
    would step it once per process).
    """
    if world_size() == 1:
        optimizer, scheduler = make_optimizer(model)
        return Parallel(model, model, optimizer, scheduler)
    kind = sharding()
    if kind is not None and not shardable:
        raise TunekitError(f"accelerate launch with a {kind} config: FSDP and DeepSpeed are for task: generation; "
                           "classification and regression models fit on one GPU, so use a DDP config "
                           "(examples/accelerate/ddp.yaml) or `tunekit run CONFIG --nproc N`")
    return _accelerate(model, make_optimizer, kind or "ddp", micro_rows, max_grad_norm, find_unused=find_unused)


def _accelerate(model, make_optimizer: Callable, kind: str, micro_rows: int, max_grad_norm: float,
                find_unused: bool = False) -> Parallel:
    """``model`` and its optimizer prepared by accelerate: ``kind`` is ``"ddp"``, or ``"fsdp"`` /
    ``"deepspeed"`` (whose settings come from accelerate launch's environment). Accumulation stays
    the loop's (accelerate's is one step, so ``backward`` scales nothing and every ``step`` steps).
    FSDP1 needs the optimizer built on the wrapped model; DDP, FSDP2 and DeepSpeed take both together."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import GradientAccumulationPlugin

    accelerator = Accelerator(
        cpu=_cpu(), gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1),  # whatever the launch config says
        mixed_precision="no" if kind == "ddp" else None,  # DDP: train.precision is the loop's autocast; FSDP's policy is accelerate's
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)])
    if kind == "deepspeed":
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            {"train_micro_batch_size_per_gpu": micro_rows, "gradient_accumulation_steps": 1, "gradient_clipping": max_grad_norm})
    if kind == "fsdp" and not accelerator.is_fsdp2:
        wrapped = accelerator.prepare(model)
        optimizer, scheduler = make_optimizer(wrapped)
        return Parallel(model, wrapped, accelerator.prepare(optimizer), scheduler, accelerator)
    optimizer, scheduler = make_optimizer(model)
    wrapped, prepared = accelerator.prepare(model, optimizer)
    return Parallel(model, wrapped, prepared, scheduler, accelerator, sharded=kind != "ddp")


def _cpu() -> bool:
    """Whether the processes train on CPU (gloo): accelerate must be told, or it sees no distributed run."""
    return not torch.cuda.is_available()


def launch(n: int, argv: list[str], module: str | None = "tunekit.cli") -> int:
    """Run ``python -m module *argv`` (or the script ``argv[0]`` when ``module`` is None) in ``n``
    processes on this machine with torch's elastic launcher (what ``torchrun --standalone
    --nproc-per-node n`` does, without restarts); returns the exit code.

    Rank 0 keeps this terminal; the other ranks' output goes to a temporary folder and is shown
    only when that rank fails. When any rank fails the launcher stops the others (they would wait
    for it forever) and its exit code is returned (128 + the signal for a rank killed by one);
    otherwise 0, which is rank 0's. Each rank gets ``OMP_NUM_THREADS`` = cores // n unless it is set.
    """
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    args = [*(["-m", module] if module else []), *argv]
    with tempfile.TemporaryDirectory(prefix="tunekit-ranks-") as logs, _launcher_state(OMP_NUM_THREADS=threads):
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=f"tunekit-{uuid.uuid4().hex[:12]}", max_restarts=0,
            rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", monitor_interval=0.1,
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects={r: Std.ALL for r in range(1, n)}))
        try:
            elastic_launch(config, sys.executable)(*args)
        except ChildFailedError as error:
            failed, code = _first_failure(error.failures)
            if failed != 0:
                stderr = next(Path(logs).glob(f"*/attempt_*/{failed}/stderr.log"), None)  # <logs>/<run>_*/attempt_0/<rank>/
                text = stderr.read_text(errors="replace")[-20_000:] if stderr is not None else ""
                sys.stderr.write(f"tunekit: rank {failed} of {n} failed (exit code {code}); its output:\n{text}")
                sys.stderr.flush()
            return code
        except SignalException as signalled:  # Ctrl-C or a kill: the launcher has stopped the ranks
            return 128 + int(signalled.sigval)
    return 0


def _first_failure(failures: dict) -> tuple[int, int]:
    """The rank whose failure ended the run and its exit code (128 + the signal when one ended it).

    torch's launcher counts the ranks it stopped itself (SIGTERM) as failed too, and stamps failures
    to the second, mostly with the time it collected them: a rank that ended otherwise is the
    cause, the earliest and then the lowest of them.
    """
    import signal

    rank_ = min(failures, key=lambda r: (failures[r].exitcode == -signal.SIGTERM, failures[r].timestamp, r))
    code = failures[rank_].exitcode
    return rank_, code if code >= 0 else 128 - code


@contextlib.contextmanager
def _launcher_state(**environ: str):
    """``environ`` set for the ranks to inherit; the variables and the signal handlers torch's
    launcher changes in this process are put back afterwards."""
    import signal

    names = [*environ, "TORCHELASTIC_SIGNALS_TO_HANDLE"]
    saved_env = {k: os.environ.get(k) for k in names}
    main = threading.current_thread() is threading.main_thread()  # only there may handlers change
    signals = [getattr(signal, s) for s in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if main and hasattr(signal, s)]
    saved_handlers = {s: signal.getsignal(s) for s in signals}
    loggers = [] if "LOGLEVEL" in os.environ else [  # its own lines repeat ours ("failed (exitcode: 3) local_rank: 1")
        logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict) if name.startswith("torch.distributed.elastic")]
    saved_levels = [logger.level for logger in loggers]
    os.environ.update(environ)
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved_levels, strict=True):
            logger.setLevel(level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for s, handler in saved_handlers.items():
            if handler is not None:
                signal.signal(s, handler)
