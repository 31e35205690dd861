"""The annotation queue: ranking signals, de-duplication, cluster spread, building from the log,
and `tunekit label` fed from stdin, whose labels retrain reads and live accuracy ignores."""

from __future__ import annotations

import types
import uuid

import numpy as np
from typer.testing import CliRunner

from tests.monitor.conftest import LABELS, HashEmbedder, banking, recipes
from tunekit.monitor import annotation
from tunekit.monitor.annotation import ANNOTATION_KEY, Weights, rank
from tunekit.serve.requestlog import RequestLog


def _emb(groups: list[int], dim: int = 8) -> np.ndarray:
    """One direction per group, a little noise: clear clusters."""
    rng = np.random.default_rng(0)
    return np.eye(dim)[groups] + rng.normal(0, 0.01, (len(groups), dim))


def test_the_most_uncertain_rows_come_first_and_duplicates_once():
    texts = ["a", "b", "c", "d", "A  ", "e"]
    unc = np.array([0.1, 0.9, 0.5, 0.2, 0.95, 0.0])  # "A  " is "a" again: it stands for it, with its own (higher) score
    picked, sig = rank(texts, unc, np.zeros(6), _emb([0] * 6), None, 4, weights=Weights(1, 0, 0), clusters=1)
    assert picked == [4, 1, 2, 3]
    assert 0 not in picked  # the duplicate with the lower score is dropped


def test_by_default_uncertainty_ranks_and_disagreement_and_novelty_are_only_reported():
    texts = [f"t{i}" for i in range(4)]
    picked, sig = rank(texts, np.array([0.5, 0.5, 0.5, 0.6]), np.array([0, 1, 0, 0]), _emb([0, 0, 1, 0]), _emb([0, 0, 0]), 1, clusters=1)
    assert picked == [3] and sig["disagreement"][1] == 1 and sig["novelty"][2] > 0.9


def test_disagreement_and_novelty_lift_a_row():
    texts = [f"t{i}" for i in range(4)]
    unc = np.array([0.5, 0.5, 0.5, 0.6])
    picked, _ = rank(texts, unc, np.array([0, 1, 0, 0]), _emb([0, 0, 0, 0]), None, 1, weights=Weights(1, 1, 1), clusters=1)
    assert picked == [1]  # champion and challenger disagree on it
    emb = _emb([0, 0, 1, 0])
    picked, sig = rank(texts, np.full(4, 0.5), np.zeros(4), emb, reference=_emb([0, 0, 0]), k=1, weights=Weights(1, 0, 1), clusters=1)
    assert picked == [2] and sig["novelty"][2] > 0.9 > 0.1 > sig["novelty"][0]  # far from every training row


def test_the_queue_spreads_over_clusters():
    groups = [0] * 20 + [1] * 5 + [2] * 5
    unc = np.r_[np.linspace(0.9, 0.99, 20), np.linspace(0.1, 0.2, 5), np.linspace(0.3, 0.4, 5)]
    texts = [f"t{i}" for i in range(30)]
    picked, sig = rank(texts, unc, np.zeros(30), _emb(groups), None, 6, weights=Weights(1, 0, 0), clusters=3)
    assert sorted(groups[i] for i in picked) == [0, 0, 1, 1, 2, 2]  # two of each kind, not six of the confusing one
    plain, _ = rank(texts, unc, np.zeros(30), _emb(groups), None, 6, weights=Weights(1, 0, 0), clusters=1)
    assert {groups[i] for i in plain} == {0}


def test_the_queue_spreads_over_the_uncertain_region_without_taking_confident_rows():
    # four kinds of hard rows (near the decision boundary), one of them the hardest; four kinds of easy rows
    groups = [0] * 25 + [1] * 25 + [2] * 25 + [3] * 25 + [4] * 40 + [5] * 40 + [6] * 40 + [7] * 40
    rng = np.random.default_rng(3)
    unc = np.r_[np.linspace(0.96, 0.99, 25), rng.uniform(0.6, 0.95, 75), rng.uniform(0.0, 0.3, 160)]
    texts = [f"t{i}" for i in range(len(groups))]
    picked, sig = rank(texts, unc, np.zeros(len(groups)), _emb(groups), None, 8, weights=Weights(1, 0, 0))
    kinds = [groups[i] for i in picked]
    assert len(picked) == 8 and max(kinds) <= 3  # only hard rows: the spread never trades uncertainty for an easy row
    assert set(kinds) == {0, 1, 2, 3}  # and every kind of hard row, not eight copies of the hardest one
    assert sorted(sig["uncertainty"][picked].tolist(), reverse=True) == sig["uncertainty"][picked].tolist()  # best first
    top = np.argsort(-unc)[:8]
    assert {groups[i] for i in top} == {0}  # what plain top-k would have queued


def _log(workspace, rows: list[tuple[str, str, float]], shadow: dict[int, str] | None = None) -> list[str]:
    ids = []
    with RequestLog(workspace / "serving.db") as log:
        for i, (text, label, score) in enumerate(rows):
            rid = f"req-{uuid.uuid4().hex}"
            log.log({"id": rid, "route": "/v1/classify", "model": "intent", "version": "1", "status": 200, "latency_ms": 1.0,
                     "request": {"inputs": [text]}, "response": [{"label": label, "score": score}]})
            if shadow and i in shadow:
                log.log({"id": f"{rid}-shadow", "route": "/v1/classify", "model": "intent", "version": "2", "status": 200,
                         "request": {"inputs": [text], "shadow_of": rid, "arm": "shadow"}, "response": [{"label": shadow[i], "score": 0.9}]})
            ids.append(rid)
        log.log({"id": "other", "route": "/v1/classify", "model": "another", "version": "1", "status": 200,
                 "request": {"inputs": ["not ours"]}, "response": [{"label": "card", "score": 0.1}]})
    return ids


def test_build_reads_the_log_and_skips_labelled_and_other_models(tmp_path):
    rows = [(t, label, 0.95) for t, label in banking(30, seed=1)] + [(t, "card", 0.4) for t in recipes(10, seed=2)]
    ids = _log(tmp_path, rows, shadow={0: "refund" if rows[0][1] != "refund" else "card"})
    with RequestLog(tmp_path / "serving.db") as log:
        log.add_feedback(ids[31], None, "card", None, None, None)  # already labelled: not queued again
    reference = HashEmbedder()([t for t, _ in banking(50, seed=9)])
    items = annotation.build(tmp_path, "intent", "1", "classification", reference, HashEmbedder(), 8, 0.0, weights=Weights(1, 1, 1), clusters=4)
    assert len(items) == 8 and len({i.text for i in items}) == 8
    assert all(i.request_id != "other" and i.request_id != ids[31] for i in items)
    assert ids[0] in {i.request_id for i in items}  # the disagreement
    # unsure and far from training, the recipes come first, spread over clusters (a random 8 of 39 would hold about 2)
    assert sum(i.text in {t for t, _, _ in rows[30:]} for i in items) >= 4
    assert [i.request_id for i in annotation.read_queue(tmp_path)] == [i.request_id for i in items]


def test_build_ranks_by_the_logged_margin_not_the_top_probability(tmp_path):
    from tunekit.serve.app import _logged
    from tunekit.serve.schemas import Prediction

    spread = Prediction(label="card", score=0.45, probabilities={"card": 0.45, "refund": 0.05, "transfer": 0.05, "other": 0.45})
    torn = Prediction(label="card", score=0.55, probabilities={"card": 0.55, "refund": 0.44, "transfer": 0.01})
    logged = _logged([spread, torn], None)
    assert logged[1] == {"label": "card", "score": 0.55, "margin": 0.11} and logged[0]["margin"] == 0.0
    wide = Prediction(label="card", score=0.45, probabilities={"card": 0.45, "refund": 0.2, "transfer": 0.2, "other": 0.15})
    ids = []
    with RequestLog(tmp_path / "serving.db") as log:
        for text, answer in (("a wide spread", _logged([wide], None)[0]), ("torn between two", logged[1])):
            ids.append(f"req-{uuid.uuid4().hex}")
            log.log({"id": ids[-1], "route": "/v1/classify", "model": "intent", "version": "1", "status": 200, "latency_ms": 1.0,
                     "request": {"inputs": [text]}, "response": [answer]})
    items = annotation.build(tmp_path, "intent", "1", "classification", None, HashEmbedder(), 1, 0.0, weights=Weights(1, 0, 0))
    assert [i.text for i in items] == ["torn between two"]  # 1 - max prob would have queued the wide spread (0.55 > 0.45)
    assert items[0].uncertainty == 0.89


def test_tunekit_label_from_stdin_feeds_retrain_but_not_live_accuracy(tmp_path, keyword_model_dir):
    from tunekit.cli import app
    from tunekit.monitor import production
    from tunekit.pipeline.retrain import feedback_rows

    texts = ["my card is lost", "refund me", "send money", "card again", "what is this"]
    _log(tmp_path, [(t, "card", 0.5) for t in texts])
    items = annotation.build(tmp_path, "intent", "1", "classification", None, HashEmbedder(), 5, 0.0, clusters=1)
    # Enter (the model's answer), a number, a label's start, an unknown key then skip, back, a name, quit
    keys = "\n2\ntr\nzzz\ns\nb\nrefund\nq\n"
    done = CliRunner().invoke(app, ["label", str(keyword_model_dir), "--workspace", str(tmp_path)], input=keys)
    assert done.exit_code == 0, done.output
    assert "Labelled 4, skipped 1 (stopped)" in done.output and "no label starts with 'zzz'" in done.output
    given = {f["request_id"]: f["label"] for f in RequestLog(tmp_path / "serving.db").feedback_since(0) if f["key_id"] == ANNOTATION_KEY}
    assert list(given.values()) == ["card", LABELS[1], "transfer", "refund"]  # the 4th row: skipped, then back and labelled
    assert given[items[0].request_id] == "card"
    rows = feedback_rows(types.SimpleNamespace(name="intent", task="classification"), tmp_path / "serving.db")
    assert sorted(r["label"] for r in rows) == sorted(given.values())
    assert production.read(tmp_path, "intent", "1", "classification", 0.0).given == []
    again = CliRunner().invoke(app, ["label", str(keyword_model_dir), "--workspace", str(tmp_path)], input="q\n")
    assert "1 rows to label (4 already done)" in again.output


def test_tunekit_queue_ranks_the_log_with_the_references_embedder(tmp_path, keyword_model_dir, monkeypatch):
    from tunekit.cli import app
    from tunekit.monitor import embed

    seen = []
    monkeypatch.setattr(embed, "for_reference", lambda name, given: seen.append(name) or HashEmbedder())  # MiniLM stands in for nothing here
    _log(tmp_path, [(t, label, 0.9) for t, label in banking(20, seed=4)] + [(t, "card", 0.3) for t in recipes(5, seed=5)])
    done = CliRunner().invoke(app, ["queue", str(keyword_model_dir), "--workspace", str(tmp_path), "--k", "6", "--clusters", "3"])
    assert done.exit_code == 0, done.output
    assert seen == ["test:hash-bow"] and "Queued 6 rows of intent" in done.output
    assert len(annotation.read_queue(tmp_path)) == 6
