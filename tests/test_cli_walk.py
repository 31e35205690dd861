"""A newcomer's walk through the README, driven through the CLI as a user types it: run, list,
serve, feedback, retrain, compare, promote, roll back, and every other command's happy path.

Each step must exit 0 with no traceback; the numbers a step prints are checked against the files
the run wrote, so a command that prints nonsense fails too. One module-scoped run on the tiny
task feeds every step (about a minute on two cores).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import synthetic_rows, write_csv
from tunekit.cli import app

NAME = "walk-intent"


def tunekit(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"HF_HUB_OFFLINE": "1"}  # piped, as a script reads it
    proc = subprocess.run([sys.executable, "-m", "tunekit.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if check:
        assert proc.returncode == 0, f"tunekit {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def walk(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("walk")
    write_csv(root / "train.csv", synthetic_rows(60, seed=1))
    write_csv(root / "test.csv", synthetic_rows(10, seed=2))
    config = {"name": NAME, "workspace": "ws", "data": {"train": "train.csv", "test": "test.csv"},
              "model": {"base": str(tiny_bert), "max_length": 32}, "method": {"kind": "lora", "r": 8, "alpha": 16},
              "train": {"epochs": 6, "batch_size": 8, "learning_rate": 5e-3, "head_learning_rate": 2e-2, "early_stopping_patience": 0,
                        "warmup_ratio": 0.0},
              "eval": {"robustness_sample": 0},
              "gate": {"min_improvement": -1.0}}  # the tiny task is easy for TF-IDF too: let the first version in
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    first = tunekit("run", "config.yaml", cwd=root)
    runs = sorted((root / "ws" / "runs").iterdir())
    assert len(runs) == 1 and "Registered walk-intent version 1 as champion" in first.stdout
    return root, runs[0], f"sqlite:///{root / 'ws' / 'mlflow.db'}"


def test_registry_list_and_history_print_and_json(walk):
    root, run_dir, uri = walk
    table = tunekit("registry", "list", NAME, "--tracking-uri", uri, cwd=root).stdout
    rows = json.loads(tunekit("registry", "list", NAME, "--tracking-uri", uri, "--json", cwd=root).stdout)
    card = json.loads((run_dir / "report.json").read_text())
    assert [r["version"] for r in rows] == ["1"] and rows[0]["aliases"] == "champion"
    assert rows[0]["test"] == pytest.approx(card["model"]["metrics"][card["primary"]], abs=1e-4)
    assert rows[0]["run"] in table  # the whole MLflow run id on one line: piped output is not cut at 80 columns
    assert json.loads(tunekit("registry", "list", "--tracking-uri", uri, "--json", cwd=root).stdout)[0]["model"] == NAME
    events = json.loads(tunekit("registry", "history", NAME, "--tracking-uri", uri, "--json", cwd=root).stdout)
    assert [e["event"] for e in events][:1] == ["registered"]


def test_data_config_plan_and_keys_commands(walk, monkeypatch):
    root, _, _ = walk
    monkeypatch.chdir(root)
    assert "valid" in invoke("config", "validate", "config.yaml")
    assert "Data report:" in invoke("data", "check", "config.yaml")
    versions = json.loads(invoke("data", "versions", "--workspace", "ws", "--json"))
    assert versions and len(versions[0]["version"]) == 64  # the full fingerprint
    assert "head for 3 labels" in invoke("plan", "config.yaml")
    assert "## " in invoke("config", "reference")
    invoke("keys", "create", "--scope", "inference", "--name", "ci", "--workspace", "ws")
    keys = json.loads(invoke("keys", "list", "--workspace", "ws", "--json"))
    assert [k["name"] for k in keys] == ["ci"]
    assert "Revoked" in invoke("keys", "revoke", keys[0]["key_id"], "--workspace", "ws")


def test_serve_classify_feedback_retrain_and_compare(walk):
    """The README's production loop: serve the champion, classify, send a correction, retrain on
    it, compare the retrained run with the first on the same test rows, promote and roll back."""
    root, first_run, uri = walk
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunekit.cli", "serve", "--model", f"{NAME}@champion", "--no-auth", "--port", str(port),
                               "--workspace", "ws", "--tracking-uri", uri], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, server)
        texts = ["my card has not arrived yet", "please refund the order", "the transfer failed again"]
        answer = httpx.post(f"{base}/v1/classify", json={"inputs": texts[:1]}, timeout=30)
        assert answer.status_code == 200, answer.text
        for text, label in zip(texts, ["card", "refund", "transfer"]):
            rid = httpx.post(f"{base}/v1/classify", json={"inputs": [text]}, timeout=30).headers["x-request-id"]
            fb = httpx.post(f"{base}/v1/feedback", json={"request_id": rid, "label": label}, timeout=30)
            assert fb.status_code == 200, fb.text
    finally:
        server.terminate()
        _, err = server.communicate(timeout=60)
    assert "Traceback" not in err, err[-3000:]
    retrained = tunekit("retrain", "config.yaml", "--from-feedback", cwd=root)
    assert "version 2" in retrained.stdout
    second_run = max((root / "ws" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    compared = tunekit("report", second_run.name, "--compare", first_run.name, "--workspace", "ws", cwd=root)
    assert (second_run / f"compare-{first_run.name}.html").is_file() and "Comparison:" in compared.stdout

    # promote by hand and roll back: each report card says what its version is now
    versions = json.loads(tunekit("registry", "list", NAME, "--tracking-uri", uri, "--json", cwd=root).stdout)
    champion = next(v["version"] for v in versions if "champion" in v["aliases"])
    other = next(v["version"] for v in versions if v["version"] != champion)
    tunekit("registry", "promote", NAME, other, "--reason", "walk", "--tracking-uri", uri, cwd=root)
    card = _card_of(uri, other)
    assert card["registry"]["alias"] == "champion" and "promoted by hand: walk" in card["registry"]["reason"]
    assert _card_of(uri, champion)["registry"]["alias"] == "none"
    tunekit("registry", "rollback", NAME, "--reason", "walk back", "--tracking-uri", uri, cwd=root)
    assert _card_of(uri, champion)["registry"]["alias"] == "champion" and _card_of(uri, other)["registry"]["alias"] == "none"


def test_serving_a_name_with_no_champion_exits_with_what_exists(walk):
    root, _, uri = walk
    proc = tunekit("serve", "--model", f"{NAME}@nosuchalias", "--no-auth", "--port", str(_free_port()), "--tracking-uri", uri,
                   cwd=root, check=False)
    assert proc.returncode == 5 and "has no version with the alias 'nosuchalias'" in proc.stderr
    assert "tunekit registry promote" in proc.stderr and "v1" in proc.stderr


def _card_of(uri: str, version: str) -> dict:
    from tunekit import registry

    run_dir = registry.client(uri).get_model_version(NAME, version).tags["run_dir"]
    return json.loads((Path(run_dir) / "report.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(base: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited {server.returncode}: {server.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the server did not become ready")
