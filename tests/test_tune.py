"""tunekit tune on the tiny task: trials run, are logged as MLflow child runs, and the best
trial's config is written out and valid."""

from mlflow import MlflowClient
from rich.console import Console

from tunekit.config import load_config
from tunekit.errors import ConfigError
from tunekit.train.tune import tune

import pytest


def test_random_search_logs_trials_and_writes_the_best_config(tiny_config):
    cfg = load_config(tiny_config(train={"epochs": 2}, tune={
        "sampler": "random", "trials": 3, "pruning": False,
        "space": {"train.learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True},
                  "method.r": {"type": "categorical", "choices": [4, 8]}}}))
    summary = tune(cfg, Console(quiet=True))
    assert summary["trials"] == 3 and summary["pruned"] == 0
    best = load_config(summary["config"])
    assert best.train.learning_rate == summary["params"]["train.learning_rate"]
    assert best.method.r == summary["params"]["method.r"]
    assert best.data.train == str(cfg.path("train.csv"))
    mlc = MlflowClient(cfg.tracking)
    children = mlc.search_runs([mlc.get_run(summary["mlflow_run_id"]).info.experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    assert len(children) == 3
    scores = sorted(r.data.metrics["best_val_macro_f1"] for r in children)
    assert summary["best_value"] == scores[-1]


def test_study_is_shared_through_its_storage(tiny_config):
    cfg = load_config(tiny_config(train={"epochs": 1}, tune={"sampler": "grid", "trials": 1, "pruning": False,
                                                             "space": {"train.batch_size": {"type": "categorical", "choices": [8, 16]}}}))
    tune(cfg, Console(quiet=True))
    again = tune(cfg, Console(quiet=True))  # a second worker on the same study continues it
    assert again["trials"] == 2


def test_grid_needs_listed_values(tiny_config):
    cfg = load_config(tiny_config(tune={"sampler": "grid", "space": {"train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}}}))
    with pytest.raises(ConfigError, match="grid walks listed values only"):
        tune(cfg, Console(quiet=True))


def test_the_shipped_banking77_space_is_searchable(tiny_config):
    """The keys of ``examples/banking77/config-best.yaml``'s space (pooling, head start, smoothing,
    unfrozen blocks) each make a config that trains."""
    from pathlib import Path

    shipped = load_config(Path(__file__).parents[1] / "examples/banking77/config-best.yaml").tune.space
    space = {k: v.model_dump(exclude_none=True) for k, v in shipped.items() if k != "train.learning_rate"}
    space["method.layers"] = {"type": "int", "low": 1, "high": 2}  # the tiny BERT has 2 blocks
    cfg = load_config(tiny_config(method={"kind": "freeze", "layers": 1}, train={"epochs": 1},
                                  tune={"sampler": "random", "trials": 3, "pruning": False, "space": space}))
    summary = tune(cfg, Console(quiet=True))
    best = load_config(summary["config"])
    assert summary["trials"] == 3 and set(summary["params"]) == set(space)
    assert (best.model.pooling, best.train.head_init) == (summary["params"]["model.pooling"], summary["params"]["train.head_init"])
