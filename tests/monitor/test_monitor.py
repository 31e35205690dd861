"""``monitor.run`` on request logs written in the tests: drift of shifted traffic, none on in-distribution
traffic, not enough traffic, live quality from feedback, the report files and the gauges."""

from __future__ import annotations

import json
import time
import types

import numpy as np
import pytest

from tests.monitor.conftest import (
    LABELS,
    HashEmbedder,
    banking,
    log_classify,
    recipes,
    write_manifest,
)
from tunekit.errors import ConfigError, ModelError
from tunekit.monitor import MonitorSettings, latest, push_latest, reference, run
from tunekit.serve.metrics import ServerMetrics
from tunekit.serve.requestlog import RequestLog


def _settings(model_dir, workspace, **kw) -> MonitorSettings:
    return MonitorSettings(model=str(model_dir), workspace=str(workspace), **kw)


def test_reference_holds_the_training_statistics(keyword_model_dir, train_rows):
    ref, emb = reference.load(keyword_model_dir)
    assert ref["task"] == "classification" and ref["rows"] == {"train": 300, "validation": 60}
    assert len(ref["length"]["words"]) == 300 and max(ref["length"]["chars"]) == max(len(t) for t, _ in train_rows)
    assert ref["vocabulary"]["words"]["card"] > 50 and ref["vocabulary"]["coverage"] == 1.0
    assert ref["oov"]["source"] == "validation" and ref["oov"]["oov_words"] == 0  # the grammar's words all occur in training
    assert sum(ref["labels"].values()) == 300 and set(ref["labels"]) == set(LABELS)
    assert sum(ref["predictions"]["labels"].values()) == 60 and min(ref["predictions"]["confidence"]) > 0.9
    assert emb.shape == (300, 64) and ref["embeddings"]["embedder"] == "test:hash-bow"
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_in_distribution_traffic_raises_no_alert(keyword_model_dir, unseen_banking, tmp_path):
    log_classify(tmp_path, unseen_banking, batch=3)
    result = run(_settings(keyword_model_dir, tmp_path), embedder=HashEmbedder())
    assert result.alerts == [], result.alerts
    t = result.report["traffic"]
    assert result.status == "ok" and (t["requests"], t["inputs"], t["enough"]) == (50, 150, True)
    checks = {c["name"]: c for c in result.report["checks"]}
    assert set(checks) == {"length_words", "length_chars", "oov_rate", "predicted_label", "confidence", "confidence_drop", "embedding"}
    assert checks["embedding"]["statistic"] < 0.65 and checks["oov_rate"]["production_rate"] == 0.0


def test_shifted_traffic_is_flagged_on_every_feature_it_moves(keyword_model_dir, tmp_path):
    log_classify(tmp_path, recipes(120, seed=4), batch=4)
    result = run(_settings(keyword_model_dir, tmp_path), embedder=HashEmbedder())
    drifted = {c["name"] for c in result.report["checks"] if c["drifted"]}
    assert {"length_words", "length_chars", "oov_rate", "embedding", "confidence_drop", "predicted_label"} <= drifted
    assert result.status == "alert" and len(result.alerts) == len(drifted)
    assert any(a.startswith("embedding drift (test:hash-bow): a classifier tells production from training texts with AUC") for a in result.alerts)
    emb = next(c for c in result.report["checks"] if c["name"] == "embedding")
    assert emb["statistic"] > 0.95


def test_report_files_are_written_and_self_contained(keyword_model_dir, tmp_path):
    log_classify(tmp_path, recipes(40, seed=5) + [t for t, _ in banking(40, seed=6)])
    result = run(_settings(keyword_model_dir, tmp_path, psi=True), embedder=HashEmbedder(), now=time.time())
    assert result.out_dir.parent == tmp_path / "monitor" and result.out_dir.name.startswith("intent-")
    saved = json.loads((result.out_dir / "monitor.json").read_text())
    assert saved["alerts"] == result.alerts and saved["status"] == "alert"
    assert all("psi" in c for c in saved["checks"] if c["name"] in {"length_words", "predicted_label", "confidence"})
    page = result.html.read_text()
    assert page.count("data:image/png;base64,") == 4  # length, confidence, labels, embedding
    assert "Drift checks" in page and "embedding drift" in page and "src=\"length.png\"" not in page


def test_not_enough_traffic_is_no_alert(keyword_model_dir, tmp_path):
    log_classify(tmp_path, recipes(20, seed=7))  # 20 off-domain texts: below min_requests (30)
    result = run(_settings(keyword_model_dir, tmp_path), embedder=HashEmbedder())
    assert result.status == "not enough traffic" and result.alerts == [] and result.report["checks"] == []
    assert "Not enough traffic: 20 inputs in the window, fewer than 30" in result.files["markdown"].read_text()


def test_only_this_models_requests_in_the_window_count(keyword_model_dir, tmp_path, unseen_banking):
    old = time.time() - 3 * 86400
    log_classify(tmp_path, recipes(60, seed=8), at=old)                 # shifted, but three days ago
    log_classify(tmp_path, recipes(60, seed=9), model="other")          # shifted, another model
    log_classify(tmp_path, unseen_banking[:60])                         # the traffic that counts
    result = run(_settings(keyword_model_dir, tmp_path, since="24h"), embedder=HashEmbedder())
    assert result.report["traffic"]["inputs"] == 60 and result.alerts == []
    wider = run(_settings(keyword_model_dir, tmp_path, since="7d"), embedder=HashEmbedder())
    assert wider.report["traffic"]["inputs"] == 120 and wider.alerts


def test_live_quality_from_feedback_labels(keyword_model_dir, tmp_path, unseen_banking):
    texts = unseen_banking[:40]
    truth = [next(label for label in LABELS if label in t) for t in texts]
    wrong = {i: next(label for label in LABELS if label != truth[i]) for i in range(0, 40, 5)}  # every 5th label disagrees
    ids = log_classify(tmp_path, texts, feedback={i: wrong.get(i, truth[i]) for i in range(40)})
    log_classify(tmp_path, texts[:4], batch=4, model="intent", feedback={0: "card"})  # a label for a batch of 4: skipped
    result = run(_settings(keyword_model_dir, tmp_path, min_feedback_accuracy=0.9), embedder=HashEmbedder())
    q = result.report["live"]["labelled"]
    assert len(ids) == 40 and q["n"] == 40 and q["correct"] == 32 and q["accuracy"] == 0.8
    # Wilson, z = 1.96: centre (0.8 + z²/80) / (1 + z²/40) = 0.7737, half-width 0.1213
    assert q["accuracy_low"] == pytest.approx(0.6524, abs=1e-4) and q["accuracy_high"] == pytest.approx(0.8950, abs=1e-4)
    assert result.report["live"]["skipped"] == 1
    assert result.alerts == ["live accuracy 0.800 (95% interval 0.652-0.895) on 40 feedback-labelled requests is below min_feedback_accuracy 0.9"]
    assert "accuracy 0.800 (95% interval 0.652-0.895, Wilson)" in result.files["markdown"].read_text()


def test_gauges_publish_the_latest_report(keyword_model_dir, tmp_path):
    log_classify(tmp_path, recipes(60, seed=10))
    result = run(_settings(keyword_model_dir, tmp_path), embedder=HashEmbedder())
    metrics = ServerMetrics()
    assert push_latest(metrics, tmp_path, "intent") and not push_latest(ServerMetrics(), tmp_path, "other")
    body = metrics.render()[0].decode()
    assert f'tunekit_drift_alerts{{model="intent"}} {float(len(result.alerts))}' in body
    assert 'tunekit_drift_detected{check="embedding",model="intent"} 1.0' in body
    assert 'tunekit_drift_inputs{model="intent"} 60.0' in body
    assert latest(tmp_path, "intent")["alerts"] == result.alerts


def test_registry_version_is_matched(keyword_model_dir, tmp_path, monkeypatch, unseen_banking):
    """A registry reference resolves to name and version; requests of another version do not count."""
    from tunekit import registry

    monkeypatch.setattr(registry, "resolve", lambda ref, uri: registry.Resolved(path=keyword_model_dir, name="intent", version="2", alias="champion"))
    log_classify(tmp_path, recipes(60, seed=11), version="1")
    log_classify(tmp_path, unseen_banking[:40], version="2")
    result = run(MonitorSettings(model="intent@champion", workspace=str(tmp_path), tracking_uri="sqlite:///x.db"), embedder=HashEmbedder())
    assert (result.report["model"]["name"], result.report["model"]["version"]) == ("intent", "2")
    assert result.report["traffic"]["inputs"] == 40 and result.alerts == []


def test_errors_say_what_is_missing(keyword_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="no request log .*serving.db; point --workspace at the folder the server was started with"):
        run(_settings(keyword_model_dir, tmp_path / "nowhere"), embedder=HashEmbedder())
    bare = write_manifest(tmp_path / "bare", "intent")
    with pytest.raises(ModelError, match="no reference.json"):
        run(_settings(bare, tmp_path), embedder=HashEmbedder())
    log_classify(tmp_path, recipes(40, seed=12))
    with pytest.raises(ModelError, match="made with 'test:hash-bow' but the monitor was given 'other'"):
        run(_settings(keyword_model_dir, tmp_path), embedder=types.SimpleNamespace(name="other"))


def test_regression_and_generation_references(tmp_path):
    """Regression: target quantiles, predicted values, RMSE on feedback; generation: the user turns of chats."""
    from datasets import Dataset

    rows = banking(120, seed=13)
    ds = Dataset.from_dict({"id": [str(i) for i in range(120)], "text": [t for t, _ in rows], "label": [float(len(t)) for t, _ in rows]})
    data = types.SimpleNamespace(train=ds, validation=ds.select(range(40)), fingerprint="fp")
    regressor = types.SimpleNamespace(predict=lambda texts, pairs=None: np.array([float(len(t)) for t in texts]))
    model_dir = write_manifest(tmp_path / "reg", "price", "regression")
    reference.build(types.SimpleNamespace(task="regression", name="price"), data, regressor, model_dir, embed=False)
    ref, emb = reference.load(model_dir)
    assert emb is None and ref["target"]["quantiles"]["p50"] == pytest.approx(float(np.median(ds["label"])))
    with RequestLog(tmp_path / "serving.db") as log:
        for i, (text, _) in enumerate(banking(40, seed=14)):
            log.log({"id": f"p{i}", "route": "/v1/predict", "model": "price", "version": None, "status": 200,
                     "request": {"inputs": [text]}, "response": [float(len(text))]})
        log.flush()
        for i in range(4):
            log.add_feedback(f"p{i}", rating=None, label=str(float(len(banking(40, seed=14)[i][0])) + 2.0), answer=None, comment=None, key_id=None)
    result = run(_settings(model_dir, tmp_path))
    assert {c["name"] for c in result.report["checks"]} == {"length_words", "length_chars", "oov_rate", "predicted_value"}
    q = result.report["live"]["labelled"]
    assert result.alerts == [] and (q["n"], q["rmse"], q["mae"]) == (4, 2.0, 2.0)

    chats = [{"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]}
             for t, _ in banking(100, seed=15)]
    gen_dir = write_manifest(tmp_path / "gen", "helper", "generation")
    reference.build(types.SimpleNamespace(task="generation", name="helper"), types.SimpleNamespace(train=chats, validation=chats[:30]),
                    None, gen_dir, embedder=HashEmbedder())
    ref, emb = reference.load(gen_dir)
    assert ref["predictions"] is None and ref["vocabulary"]["words"].get("be") is None  # system turns are not user text
    with RequestLog(tmp_path / "serving.db") as log:
        for i, text in enumerate(recipes(40, seed=16)):
            log.log({"id": f"c{i}", "route": "/v1/chat/completions", "model": "helper", "status": 200,
                     "request": {"model": "helper", "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]},
                     "response": [{"text": "sure", "finish_reason": "stop"}]})
    result = run(_settings(gen_dir, tmp_path), embedder=HashEmbedder())
    assert result.report["traffic"]["inputs"] == 40
    assert {c["name"] for c in result.report["checks"] if c["drifted"]} >= {"oov_rate", "embedding", "length_words"}
