"""Registry on a temp-dir SQLite MLflow: versions, gate aliases, audit trail, rollback, resolve."""

import pytest

from tunekit import registry
from tunekit.errors import RegistryError
from tunekit.registry import ChampionScore, decide


@pytest.fixture
def mlc(tmp_path):
    return registry.client(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _new_version(mlc, tmp_path, score: float, fingerprint: str = "t1") -> str:
    adapter = tmp_path / f"adapter-{score}"
    adapter.mkdir()
    (adapter / "tunekit.json").write_text('{"name": "m"}')
    run_id = registry.log_run(mlc, "m", tmp_path, params={"method.kind": "lora"}, metrics={"test_macro_f1": score},
                              tags={"tunekit.data_fingerprint": "d1"}, artifacts=[("adapter", adapter)],
                              history=[{"epoch": 1, "train_loss": 1.0}])
    return registry.register(mlc, "m", run_id, {"test_fingerprint": fingerprint, "test_macro_f1": score})


def test_gate_aliases_history_and_rollback(mlc, tmp_path):
    v1 = _new_version(mlc, tmp_path, 0.80)
    registry.set_alias(mlc, "m", v1, decide("macro_f1", 0.80, 0.70, 0.0, None))
    assert str(registry.champion_version(mlc, "m").version) == v1 == "1"

    v2 = _new_version(mlc, tmp_path, 0.75)  # worse than the champion: challenger
    registry.set_alias(mlc, "m", v2, decide("macro_f1", 0.75, 0.70, 0.0, ChampionScore(v1, 0.80, "recorded")))
    assert str(registry.champion_version(mlc, "m").version) == "1"
    assert str(mlc.get_model_version_by_alias("m", "challenger").version) == "2"

    v3 = _new_version(mlc, tmp_path, 0.85)
    registry.set_alias(mlc, "m", v3, decide("macro_f1", 0.85, 0.70, 0.0, ChampionScore(v1, 0.80, "recorded")))
    assert str(registry.champion_version(mlc, "m").version) == "3"

    assert registry.rollback(mlc, "m", "bad outputs in production") == ("3", "1")
    assert str(registry.champion_version(mlc, "m").version) == "1"
    events = [(e["version"], e["action"]) for e in registry.history(mlc, "m")]
    assert events == [("1", "registered"), ("1", "promoted"), ("2", "registered"), ("2", "challenger"),
                      ("3", "registered"), ("3", "promoted"), ("1", "demoted"), ("1", "promoted"), ("3", "rolled_back")]
    assert "bad outputs in production" in registry.history(mlc, "m")[-1]["reason"]
    with pytest.raises(RegistryError, match="did not replace an earlier champion"):
        registry.rollback(mlc, "m")  # v1 was the first champion


def test_manual_promote_and_errors(mlc, tmp_path):
    _new_version(mlc, tmp_path, 0.8)
    assert registry.promote(mlc, "m", "1", "first") is None
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(mlc, "m", "1", "again")
    with pytest.raises(RegistryError, match="has no version 9"):
        registry.promote(mlc, "m", "9", "nope")
    with pytest.raises(RegistryError, match="no registered model 'zzz'; registered: m"):
        registry.list_versions(mlc, "zzz")


def test_resolve_alias_and_version_to_the_adapter_folder(mlc, tmp_path):
    uri = mlc.tracking_uri
    v1 = _new_version(mlc, tmp_path, 0.8)
    registry.promote(mlc, "m", v1, "first")
    by_alias = registry.resolve("m@champion", uri)
    assert (by_alias.path / "tunekit.json").is_file() and by_alias.version == "1" and by_alias.alias == "champion"
    assert registry.resolve("m/1", uri).path == by_alias.path
    with pytest.raises(RegistryError, match=r"m@staging: m has no version with the alias 'staging' \(versions: v1@champion\).*registry promote m"):
        registry.resolve("m@staging", uri)
    with pytest.raises(RegistryError, match="neither a folder nor NAME@ALIAS"):
        registry.resolve("m:latest", uri)


def test_run_logs_params_metrics_per_epoch_and_artifacts(mlc, tmp_path):
    v1 = _new_version(mlc, tmp_path, 0.8)
    run = mlc.get_run(mlc.get_model_version("m", v1).run_id)
    assert run.data.params["method.kind"] == "lora" and run.data.metrics["test_macro_f1"] == 0.8
    assert [m.step for m in mlc.get_metric_history(run.info.run_id, "train_loss")] == [1]
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts").as_uri())  # artifacts stay in the workspace
