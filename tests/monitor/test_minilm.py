"""The default embedder, the bundled MiniLM: the reference and the monitor both use it when no other is given."""

from __future__ import annotations

import types

import numpy as np
import pytest

from tests.monitor.conftest import (
    KeywordClassifier,
    banking,
    log_classify,
    prepared,
    recipes,
    write_manifest,
)
from tunekit.monitor import MonitorSettings, reference, run
from tunekit.monitor.embed import MiniLMEmbedder


@pytest.mark.slow
def test_minilm_embeddings_are_normalised_and_put_one_domain_together():
    emb = MiniLMEmbedder()(["my card was declined at the shop", "the card is blocked", "simmer the sauce with garlic for ten minutes"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@pytest.mark.slow
def test_reference_and_monitor_default_to_minilm(tmp_path):
    model_dir = write_manifest(tmp_path / "model", "intent")
    train, val = banking(120, seed=30), banking(40, seed=31)
    reference.build(types.SimpleNamespace(task="classification", name="intent"), prepared(train, val), KeywordClassifier(), model_dir,
                    embed_sample=100)
    ref, emb = reference.load(model_dir)
    assert ref["embeddings"]["embedder"] == "bundled:minilm" and emb.shape == (100, 384)
    log_classify(tmp_path, recipes(40, seed=32))
    result = run(MonitorSettings(model=str(model_dir), workspace=str(tmp_path)))
    assert next(c for c in result.report["checks"] if c["name"] == "embedding")["statistic"] > 0.95
