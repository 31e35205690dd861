"""Train stage: fine-tune the base model with the configured method on the frozen splits.

``run`` is the one entry: it picks the task's part of training (``labelled`` for classification
and regression, ``causal`` for generation, ``preference`` for DPO and ORPO) and hands it to the one loop (``loop.fit``), which owns
batching, accumulation, precision, checkpoints, early stopping and data-parallel training. The
result is a self-describing model folder (PEFT's own files, the tokenizer and ``tunekit.json``)
that ``PeftModel.from_pretrained`` loads unchanged.

Modules: ``loop`` (the loop), ``labelled``, ``causal`` and ``preference`` (the tasks' parts), ``optimizer``
(AdamW groups, schedule, precision), ``checkpoint`` (save, load, resume), ``batching``
(length-grouped batch order), ``schedules`` (layer-wise rates, gradual unfreezing),
``distributed`` (processes), ``tune`` (hyperparameter search), ``plan`` (cost before training).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from tunekit import methods
from tunekit.config import TunekitConfig
from tunekit.data.prepared import Prepared
from tunekit.models import pick_device
from tunekit.train import distributed, loop
from tunekit.train.loop import TrainResult, rss_high_water_mb

__all__ = ["TrainResult", "objective_for", "rss_high_water_mb", "run", "seed_everything"]


def run(cfg: TunekitConfig, data: Prepared, out_dir: Path, console=None, resume: bool = False, on_epoch=None) -> TrainResult:
    """Train on ``data``'s training split, validate every epoch, write the best epoch's model to ``out_dir``.

    ``resume=True`` continues from the checkpoint beside ``out_dir`` (``train.checkpoint_every``).
    ``on_epoch(epoch, score)`` is called after each validation with the score as measured (for
    ``rmse``, ``mae`` and ``mse`` lower is better; for generation it is minus the validation loss).
    """
    distributed.init()
    console = console if distributed.is_main() else _quiet()
    loop.check_sharded(cfg, resume)
    seed_everything(cfg.train.seed)
    device = distributed.local_device(pick_device(cfg.train.device))
    methods.check(cfg.method, device)  # before any weights load
    objective = objective_for(cfg.task)(cfg, data, device, console)
    return loop.fit(cfg, objective, out_dir, console, resume, on_epoch)


def objective_for(task: str):
    """The class of ``task``'s part of training (``train.loop.Objective``): one row per task, like
    ``tasks.TASKS``; ``tests/test_tasks.py`` checks both tables name the same tasks."""
    from tunekit.train.causal import CausalObjective
    from tunekit.train.labelled import LabelledObjective
    from tunekit.train.preference import PreferenceObjective

    objectives = {"classification": LabelledObjective, "regression": LabelledObjective, "generation": CausalObjective,
                  "preference": PreferenceObjective}
    return objectives[task]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _quiet():
    """The console of a rank other than 0: rank 0 alone reports progress."""
    from rich.console import Console

    return Console(quiet=True)
