"""Occlusion attributions pick out the token that decides the label (planted on a synthetic task)."""

import random

import datasets
import numpy as np
from types import SimpleNamespace

from tunekit import train
from tunekit.config import TunekitConfig
from tunekit.evaluate.explain import occlusion, render_markdown
from tunekit.models import load_trained
from tunekit.models.tiny import build_tiny_bert


def test_occlusion_on_a_fake_model_is_exact():
    def predict(texts):  # P(label 1) = 0.9 when "zebra" is present, else 0.2
        p = np.array([0.9 if "zebra" in t.split() else 0.2 for t in texts])
        return np.stack([1 - p, p], axis=1)

    e = occlusion(predict, "the zebra runs", ["no", "yes"])
    assert e["label"] == "yes" and e["probability"] == 0.9
    assert dict(e["attributions"]) == {"the": 0.0, "zebra": 0.7, "runs": 0.0}
    assert "**zebra**" in render_markdown(e)


def test_occlusion_finds_the_planted_token_in_a_trained_model(tmp_path):
    rng = random.Random(0)
    vocab = "alpha beta gamma delta omega sigma kappa lambda theta iota".split()
    rows = []
    for i in range(160):
        words = rng.sample(vocab, 4)
        label = i % 2
        if label:
            words.insert(rng.randrange(5), "zebra")
        rows.append((" ".join(words), label))
    base = build_tiny_bert(tmp_path / "base", [t for t, _ in rows])
    ds = lambda part: datasets.Dataset.from_dict({"id": [str(i) for i in range(len(part))], "text": [t for t, _ in part], "label": [y for _, y in part]})
    data = SimpleNamespace(train=ds(rows[:128]), validation=ds(rows[128:]), test=None, labels=["plain", "zebra"],
                           fingerprint="fp", test_fingerprint="tfp")
    cfg = TunekitConfig.model_validate({"name": "z", "data": {"train": "x.csv"}, "model": {"base": str(base), "max_length": 16},
                                        "method": {"kind": "full"}, "train": {"epochs": 8, "batch_size": 8, "learning_rate": 3e-3,
                                                                                "early_stopping_patience": 0}})
    result = train.run(cfg, data, tmp_path / "adapter")
    assert result.best_score > 0.9
    model = load_trained(tmp_path / "adapter")
    for text in ["alpha zebra gamma delta", "omega sigma kappa zebra"]:
        e = occlusion(model.predict_proba, text, model.labels)
        assert e["label"] == "zebra"
        assert max(e["attributions"], key=lambda wa: wa[1])[0] == "zebra"
