"""The TF-IDF baseline: a fair reference for sentence pairs too (pair features, not one concatenated document)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import yaml

from tunekit import baseline
from tunekit.config import load_config
from tunekit.data import prepare

TOPICS = {
    "card": "card delivery arrive post envelope mail plastic pin activate chip",
    "refund": "refund money back return purchase merchant order receipt reimburse cancel",
    "transfer": "transfer send friend account pending iban recipient wire payee bank",
    "rate": "exchange rate currency euro dollar fee conversion pound abroad foreign",
    "topup": "top up cash deposit wallet balance add funds cheque load recharge",
    "login": "password login passcode locked app verify identity reset device phone",
}
FILLER = ["please", "i", "my", "the", "a", "is", "why", "how", "can", "you", "still", "not", "it", "to"]


def _sentence(rng: random.Random, topic: str) -> str:
    words = rng.sample(TOPICS[topic].split(), 3) + rng.sample(FILLER, 3)
    rng.shuffle(words)
    return " ".join(words)


def _pairs(n: int, seed: int) -> list[tuple[str, str, str]]:
    """Half the pairs from one topic ("same"), half from two ("different"); every topic word is as
    common in either label, so only whether the two sides agree tells the label."""
    rng, out = random.Random(seed), []
    for i in range(n):
        first = rng.choice(list(TOPICS))
        second = first if i % 2 else rng.choice([t for t in TOPICS if t != first])
        out.append((_sentence(rng, first), _sentence(rng, second), "same" if i % 2 else "different"))
    return out


def _config(root: Path, name: str, rows: list[tuple], pair: bool, task: str = "classification"):
    with (root / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["a", "b", "label"] if pair else ["text", "label"])
        writer.writerows(rows)
    data = {"train": f"{name}.csv", "split": {"validation": 0.1, "test": 0.25, "seed": 3}}
    data |= {"text_column": "a", "text_pair_column": "b"} if pair else {}
    (root / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "task": task, "workspace": str(root / "ws"), "data": data}))
    return load_config(root / f"{name}.yaml")


def test_pair_features_beat_the_concatenated_pair_on_a_task_about_agreement(tmp_path):
    pairs = _pairs(800, seed=5)
    cfg = _config(tmp_path, "pairs", pairs, pair=True)
    paired = baseline.run(cfg, prepare(cfg))
    cfg_joined = _config(tmp_path, "joined", [(f"{a} ||| {b}", label) for a, b, label in pairs], pair=False)
    joined = baseline.run(cfg_joined, prepare(cfg_joined))  # what the baseline did with pairs before: one document

    assert paired.name == "tfidf-pair-logreg" and joined.name == "tfidf-logreg"
    assert joined.metrics["macro_f1"] < 0.65  # a bag of words of both sides cannot see agreement
    assert paired.metrics["macro_f1"] > 0.9
    assert paired.probs.shape == (200, 2) and np.allclose(paired.probs.sum(1), 1, atol=1e-5)


def test_pair_features_line_up_both_sides_in_one_vocabulary():
    pairs = [("refund my card", "card refund please"), ("send money", "exchange rate"), ("my card", "a new card")]
    features = baseline.PairFeatures(latent=0).fit(pairs)
    x = features.transform(pairs).toarray()
    width = len(features.vectoriser_.vocabulary_)
    assert x.shape == (3, 4 * width + 1)
    a, b, diff, both, cosine = x[:, :width], x[:, width:2 * width], x[:, 2 * width:3 * width], x[:, 3 * width:4 * width], x[:, -1]
    assert np.allclose(diff, np.abs(a - b)) and np.allclose(both, a * b)
    assert cosine[0] > 0.2 and cosine[1] == 0  # shared words; nothing shared
    assert np.allclose(cosine, both.sum(1))

    latent = baseline.PairFeatures(latent=2).fit(pairs).transform(pairs).toarray()
    assert latent.shape == (3, 4 * width + 1 + 2 * 2 + 1) and np.allclose(latent[:, :4 * width + 1], x)
    assert np.all(np.abs(latent[:, -1]) <= 1 + 1e-9)  # a cosine in the latent space


def test_pair_regression_uses_the_pair_features(tmp_path):
    rng = random.Random(2)
    rows = []
    for _ in range(300):  # a similarity score: how many of the three topic words the sides share
        topic = rng.choice(list(TOPICS))
        words = TOPICS[topic].split()
        a = rng.sample(words, 3)
        shared = rng.randint(0, 3)
        b = a[:shared] + rng.sample([w for w in words if w not in a], 3 - shared)
        rows.append((" ".join(a + rng.sample(FILLER, 2)), " ".join(b + rng.sample(FILLER, 2)), float(shared)))
    cfg = _config(tmp_path, "sts", rows, pair=True, task="regression")
    result = baseline.run(cfg, prepare(cfg))
    assert result.name == "tfidf-pair-ridge" and result.values.shape == (75,)
    assert result.metrics["r2"] > 0.5


def test_pair_features_take_any_number_of_rows():
    features = baseline.PairFeatures().fit([("card arrived", "card late")])
    assert features.svd_ is None  # too few texts for a latent space: the word features alone
    assert features.transform([("new card", "refund")]).shape == (1, 4 * len(features.vectoriser_.vocabulary_) + 1)
