"""The CLI turns tunekit errors into a message and an exit code, never a traceback."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from tunekit.cli import app

runner = CliRunner()


def tunekit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunekit.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_config_validate_ok_and_bad(tmp_path, tiny_config):
    ok = tunekit("config", "validate", str(tiny_config()))
    assert ok.returncode == 0 and "valid" in ok.stdout and "early_stopping_patience" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {train: a.csv}\ntrain: {epochs: 0}\n")
    proc = tunekit("config", "validate", str(bad))
    assert proc.returncode == 2
    assert "ConfigError" in proc.stderr and "line 3: train.epochs" in proc.stderr and "Traceback" not in proc.stderr


def test_config_schema_is_json_schema():
    result = runner.invoke(app, ["config", "schema"])
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) >= {"name", "data", "model", "method", "train", "eval", "gate"}


def test_data_check_reports_and_bad_data_exits_3(tmp_path, tiny_config):
    cfg = tiny_config()
    proc = tunekit("data", "check", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "Data report:" in proc.stdout
    (tmp_path / "train.csv").write_text("text,label\nhello,a\n,b\n")
    proc = tunekit("data", "check", str(cfg))
    assert proc.returncode == 3 and "DataError" in proc.stderr and "line 3" in proc.stderr and "Traceback" not in proc.stderr


def test_registry_commands_on_an_empty_registry(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = tunekit("registry", "history", "nope", "--tracking-uri", uri)
    assert proc.returncode == 5 and "no registered model 'nope'" in proc.stderr
    proc = tunekit("serve", "--model", "nope@champion", "--tracking-uri", uri, "--port", "0", "--help")
    assert proc.returncode == 0 and "--max-inputs" in proc.stdout


def test_plan_command_counts_the_head_from_the_data(tiny_config):
    proc = tunekit("plan", str(tiny_config()), "--gpu", "t4-16gb")
    assert proc.returncode == 0, proc.stderr
    assert "head for 3 labels" in proc.stdout and "fits" in proc.stdout


def test_server_and_monitor_options_come_from_their_settings():
    """The help of every generated option shows the settings model's own default, so the two
    cannot drift apart (the help once said 5 ms for a 2 ms default)."""
    from tunekit.monitor.settings import MonitorSettings
    from tunekit.serve.settings import ServeSettings

    wide = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}
    serve_help = runner.invoke(app, ["serve", "--help"], env=wide).stdout
    for name in ("max_wait_ms", "batch_size", "max_body_bytes", "port"):
        flag = "--" + name.replace("_", "-")
        default = ServeSettings.model_fields[name].default
        assert flag in serve_help and f"(default: {default})" in serve_help, name
    assert "--rate-limit" in serve_help and "--no-auth" in serve_help
    monitor_help = runner.invoke(app, ["monitor", "--help"], env=wide).stdout
    assert "--p-value" in monitor_help and f"(default: {MonitorSettings.model_fields['p_value'].default})" in monitor_help
    keys_help = runner.invoke(app, ["keys", "create", "--help"], env=wide).stdout
    assert "keys.db" in keys_help and "runs/" not in keys_help
