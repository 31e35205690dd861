"""``tunekit monitor``: exit 1 on an alert (so cron or CI can act), 0 without, 2 on bad settings."""

from __future__ import annotations

import json
import types

import pytest
from typer.testing import CliRunner

from tests.monitor.conftest import (
    KeywordClassifier,
    log_classify,
    prepared,
    recipes,
    write_manifest,
)
from tunekit import cli
from tunekit.monitor import reference

pytestmark = pytest.mark.skipif(
    "monitor" not in {c.name or c.callback.__name__ for c in cli.app.registered_commands},
    reason="the `monitor` command is not wired into tunekit/cli.py yet",
)


@pytest.fixture
def plain_model_dir(tmp_path, train_rows, validation_rows):
    """A reference without embeddings, so the CLI's default embedder (MiniLM) is not needed."""
    path = write_manifest(tmp_path / "model", "intent")
    reference.build(types.SimpleNamespace(task="classification", name="intent"), prepared(train_rows, validation_rows),
                    KeywordClassifier(), path, embed=False)
    return path


def _monitor(*args: str):
    return CliRunner().invoke(cli.app, ["monitor", *args])


def test_exit_code_is_1_on_an_alert_and_0_without(plain_model_dir, tmp_path, unseen_banking):
    calm, shifted = tmp_path / "calm", tmp_path / "shifted"
    log_classify(calm, unseen_banking[:60])
    log_classify(shifted, recipes(60, seed=40))
    ok = _monitor("--model", str(plain_model_dir), "--workspace", str(calm), "--since", "1h")
    assert ok.exit_code == 0, ok.output
    assert "OK: intent, last 1h: 60 requests, 60 inputs" in ok.output
    alert = _monitor("--model", str(plain_model_dir), "--workspace", str(shifted), "--json")
    assert alert.exit_code == 1, alert.output
    assert json.loads(alert.output)["status"] == "alert"


def test_bad_settings_are_a_config_error(plain_model_dir, tmp_path):
    result = _monitor("--model", str(plain_model_dir), "--workspace", str(tmp_path), "--since", "yesterday")
    assert result.exit_code != 0 and "expected a positive duration such as 30m, 24h, 7d" in str(result.exception)
