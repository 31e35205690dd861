"""Checkpoints: where the loop is, written so that a run killed at any moment (even ``kill -9``)
continues with ``--resume`` to the same weights and metrics as an uninterrupted run.

A checkpoint is the ``LoopState`` with the trained weights, the optimizer, the schedule and every
random generator's state. It is written atomically (temp file + rename), loaded with
``weights_only=True`` so a file planted in a run folder cannot run code, and refused when the data
or the config changed since it was written.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunekit.errors import TunekitError

__all__ = ["LoopState", "load", "resume", "save"]


@dataclass
class LoopState:
    """Where the loop is; with the model, optimizer, scheduler and RNG states it is a checkpoint."""

    epoch: int = 1
    step: int = 0                      # micro-batches of ``epoch`` already trained
    batches: list | None = None        # this epoch's batch order (None: not drawn yet)
    loss_sum: float = 0.0              # sum of the micro-batches' mean losses this epoch
    history: list = field(default_factory=list)
    best_score: float = -np.inf
    best_epoch: int = 0
    best_state: dict | None = None
    stale: int = 0                     # epochs since the best one (early stopping)
    seen: int = 0                      # training rows seen over all epochs
    train_seconds: float = 0.0
    tokens: int = 0                    # real (non-padding) training tokens over all epochs, this rank


def save(path: Path, identity: dict, st: LoopState, trained: dict, optimizer, scheduler, rng: np.random.Generator) -> None:
    """Everything needed to continue bit for bit; ``trained`` is the state dict of the weights the
    method trains. Written atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        **identity, "loop": vars(st), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "model": trained,
        "rng": {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state, "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict:
    """A checkpoint written by ``save``, loaded with ``weights_only=True``: tensors, plain Python
    values and NumPy arrays (the batch order, the RNG state) only."""
    import numpy

    multiarray = numpy._core.multiarray if hasattr(numpy, "_core") else numpy.core.multiarray
    dtypes = [type(numpy.dtype(t)) for t in ("bool", "int32", "int64", "uint32", "uint64", "float32", "float64")]
    try:
        with torch.serialization.safe_globals([multiarray._reconstruct, multiarray.scalar, numpy.ndarray, numpy.dtype, *dtypes]):
            return torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, say which file and what to do
        raise TunekitError(f"cannot resume from {path}: it is not a checkpoint tunekit can load safely ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:300]}). Delete it and start a new run (without --resume).") from None


def resume(path: Path, identity: dict, model, optimizer, scheduler, rng: np.random.Generator) -> LoopState:
    """Restore the weights, optimizer, schedule and generators from ``path``; the loop state to go on from."""
    if not path.is_file():
        raise TunekitError(f"nothing to resume: no checkpoint at {path} (the run finished, or never reached a checkpoint; "
                           "set train.checkpoint_every to checkpoint more often)")
    state = load(path)
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
