"""The README demo, shrunk: `tunekit run` on shipped BANKING77 rows with the bundled MiniLM, then
the registry and the server answer with the version it registered."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from collections import Counter

import pytest
import yaml

from tests.conftest import local_settings

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow
LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "request_refund", "cancel_transfer", "top_up_failed"]


def _slice(src, dest, per_label):
    with open(src, encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["category"] in LABELS]
    taken, out = Counter(), []
    for row in rows:
        if taken[row["category"]] < per_label:
            taken[row["category"]] += 1
            out.append(row)
    with open(dest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["text", "category"])
        writer.writeheader()
        writer.writerows(out)
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    (tmp / "data").mkdir()
    _slice(ROOT / "examples/banking77/data/train.csv", tmp / "data/train.csv", 50)
    test_rows = _slice(ROOT / "examples/banking77/data/test.csv", tmp / "data/test.csv", 20)
    (tmp / "suite.yaml").write_text((ROOT / "examples/banking77/suite.yaml").read_text())
    config = yaml.safe_load((ROOT / "examples/banking77/config.yaml").read_text())
    config["data"].pop("max_train_rows")
    config["train"]["epochs"] = 3
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "tunekit.cli", "run", "config.yaml"], cwd=tmp,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, proc.stdout, test_rows


def test_run_beats_majority_and_reports_every_stage(demo):
    tmp, out, test_rows = demo
    for stage in ("1/5 data", "2/5 baseline", "3/5 train", "4/5 evaluate", "5/5 register"):
        assert stage in out
    run_dir = next((tmp / "tunekit-workspace" / "runs").iterdir())
    card = json.loads((run_dir / "report.json").read_text())
    majority = max(Counter(r["category"] for r in test_rows).values()) / len(test_rows)
    assert card["model"]["metrics"]["accuracy"] > majority + 0.3
    assert card["registry"]["version"] == "1"
    assert "Registered banking77-intent version 1 as" in out
    for name in ("report.md", "predictions.csv", "confusion_matrix.png", "per_class_f1.png", "adapter/tunekit.json"):
        assert (run_dir / name).exists(), name


def test_registry_holds_the_version_with_lineage_tags(demo):
    from mlflow import MlflowClient

    tmp, _, _ = demo
    mlc = MlflowClient(f"sqlite:///{tmp / 'tunekit-workspace' / 'mlflow.db'}")
    mv = mlc.get_model_version("banking77-intent", "1")
    run = mlc.get_run(mv.run_id)
    for tag in ("tunekit.data_fingerprint", "tunekit.test_fingerprint", "tunekit.config_hash", "tunekit.version.torch"):
        assert run.data.tags[tag], tag
    assert run.data.metrics["test_macro_f1"] > 0 and "baseline_macro_f1" in run.data.metrics
    assert run.data.params["method.r"] == "16"
    artifacts = {a.path for a in mlc.list_artifacts(mv.run_id)}
    assert {"adapter", "data", "evaluation", "report"} <= artifacts
    card = json.loads((next((tmp / "tunekit-workspace" / "runs").iterdir()) / "report.json").read_text())
    assert ("champion" in mv.aliases) == card["registry"]["passed"]


def test_server_answers_with_the_registered_version(demo):
    from fastapi.testclient import TestClient

    from tunekit.serve import ServeSettings, create_app

    tmp, _, _ = demo
    mlc_uri = f"sqlite:///{tmp / 'tunekit-workspace' / 'mlflow.db'}"
    app = create_app(local_settings(model="banking77-intent/1", tracking_uri=mlc_uri))
    with TestClient(app) as client:
        deadline = time.time() + 120
        while client.get("/readyz").status_code != 200:
            assert time.time() < deadline, client.get("/readyz").json()
            time.sleep(0.2)
        resp = client.post("/v1/classify", json={"inputs": ["my card has not arrived yet", "what is the exchange rate for euros"]})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["version"] == "1" and body["model"] == "banking77-intent"
        assert [p["label"] for p in body["predictions"]] == ["card_arrival", "exchange_rate"]


def test_second_run_reuses_frozen_splits(demo, monkeypatch):
    tmp, _, _ = demo
    monkeypatch.chdir(tmp)
    from tunekit import data
    from tunekit.config import load_config

    prepared = data.prepare(load_config(tmp / "config.yaml"))
    assert prepared.reused
