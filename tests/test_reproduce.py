"""`tunekit reproduce`: a registered version trains again to the same metrics, and refuses data that changed."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from tunekit import data, pipeline, registry
from tunekit.artifacts import Manifest
from tunekit.config import load_config
from tunekit.data import versions
from tunekit.errors import DataError
from tunekit.pipeline.reproduce import _check, reproduce


@pytest.fixture
def quiet():
    return Console(quiet=True)


def test_reproduce_matches_the_recorded_metrics_then_refuses_edited_splits(tiny_config, quiet):
    cfg = load_config(tiny_config(train={"epochs": 2}, eval={"robustness_sample": 0, "explain_samples": 0, "label_noise": False,
                                                             "bootstrap_resamples": 100}))
    outcome = pipeline.run(cfg, quiet)
    ref = f"{cfg.name}/{outcome.version}"

    result = reproduce(ref, cfg.tracking, console=quiet)

    assert result.ok, [c for c in result.checks if not c.ok]
    assert {c.name for c in result.checks} == {"accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "mcc"}
    assert all(c.diff == 0.0 for c in result.checks)  # CPU training with a fixed seed is deterministic
    assert result.out_dir.parent == cfg.workspace_dir / "reproduce" and (result.out_dir / "adapter" / "tunekit.json").is_file()
    assert json.loads((result.out_dir / "reproduce.json").read_text())["ok"] is True

    fp = outcome.card["data"]["fingerprint"]
    split = cfg.workspace_dir / "datasets" / fp[:16] / "train.parquet"
    table = pq.read_table(split)
    texts = table.column("text").to_pylist()
    texts[0] += " edited"
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), split)
    with pytest.raises(DataError, match=f"data no longer matches fingerprint {fp[:16]}.*were files in it edited"):
        reproduce(ref, cfg.tracking, console=quiet)


def test_reproduce_refuses_erased_or_missing_data(tiny_config, tmp_path, quiet):
    cfg = load_config(tiny_config())
    prepared = data.prepare(cfg)
    ws = cfg.workspace_dir
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    Manifest(task=cfg.task, name=cfg.name, method=cfg.method.kind, base_model={"id": cfg.model.base}, max_length=cfg.model.max_length,
             config=cfg.model_dump(mode="json"), data_fingerprint=prepared.fingerprint, metrics={"accuracy": 0.9}).write(adapter)
    mlc = registry.client(cfg.tracking, ws)
    run_id = registry.log_run(mlc, cfg.name, ws, params={}, metrics={}, tags={}, artifacts=[("adapter", adapter)])
    version = registry.register(mlc, cfg.name, run_id, {"data_fingerprint": prepared.fingerprint, "run_dir": str(ws / "runs" / "r1")})

    erased = versions.forget(ws, f"id=={prepared.train[0]['id']}", None, reason="request 9")
    assert [(m.name, m.version) for m in erased.models] == [(cfg.name, version)]
    with pytest.raises(DataError, match=f"no longer matches fingerprint {prepared.fingerprint[:16]}: rows were erased .*request 9"):
        reproduce(f"{cfg.name}/{version}", cfg.tracking, console=quiet)

    (ws / "datasets" / prepared.fingerprint[:16] / "alias.json").unlink()
    with pytest.raises(DataError, match="no frozen splits for it"):
        reproduce(f"{cfg.name}/{version}", cfg.tracking, console=quiet)


def test_tolerance_is_absolute_for_scores_and_relative_for_large_values():
    assert _check("accuracy", 0.8, 0.80005, 1e-4).ok
    assert not _check("accuracy", 0.8, 0.8002, 1e-4).ok
    assert _check("rmse", 250.0, 250.02, 1e-4).ok  # within 1e-4 of 250
    assert not _check("rmse", 250.0, 250.03, 1e-4).ok
    assert not _check("bleu", 0.5, None, 1e-4).ok  # a recorded metric that was not measured again fails
