"""Label-noise candidates: planted label flips are found, a clean dataset raises almost nothing."""

from __future__ import annotations

import random

import pytest

from tunekit.data.noise import label_noise_candidates, markdown

NAMES = ["card", "refund", "transfer"]
VOCAB = {
    0: ["card", "arrived", "delivered", "plastic", "mail", "pin", "expiry", "contactless"],
    1: ["refund", "money", "back", "return", "purchase", "reimburse", "merchant", "order"],
    2: ["transfer", "send", "account", "iban", "recipient", "pending", "wire", "friend"],
}
FILLER = ["please", "today", "hi", "thanks", "help", "now", "my", "the"]


def dataset(per_class: int = 30, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """Texts of 3 class words + 2 filler words each, so each class's vocabulary gives it away."""
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in VOCAB.items():
        for _ in range(per_class):
            tokens = rng.sample(words, 3) + rng.sample(FILLER, 2)
            rng.shuffle(tokens)
            texts.append(" ".join(tokens))
            labels.append(label)
    return texts, labels, [f"row-{i}" for i in range(len(texts))]


def test_planted_flips_are_top_candidates_with_the_right_suggestion():
    texts, labels, ids = dataset()
    planted = {5: (0, 1), 40: (1, 2), 75: (2, 0)}  # row: (true label, planted wrong label)
    for row, (true, wrong) in planted.items():
        assert labels[row] == true
        labels[row] = wrong
    out = label_noise_candidates(texts, labels, NAMES, ids, top=5)
    top = {c["id"]: c for c in out["candidates"]}
    for row, (true, wrong) in planted.items():
        cand = top[f"row-{row}"]
        assert (cand["label"], cand["suggested"]) == (NAMES[wrong], NAMES[true])
        assert cand["margin"] == pytest.approx(cand["suggested_prob"] - cand["label_prob"], abs=1e-3)
        assert cand["margin"] > 0
    margins = [c["margin"] for c in out["candidates"]]
    assert margins == sorted(margins, reverse=True)
    assert out["n_candidates"] >= 3 and out["share"] == out["n_candidates"] / len(texts)


def test_clean_dataset_gives_few_candidates():
    texts, labels, ids = dataset(seed=1)
    out = label_noise_candidates(texts, labels, NAMES, ids)
    assert out["share"] < 0.05
    assert out["skipped_labels"] == [] and out["folds"] == 5 and out["method"]


def test_singleton_class_is_skipped_and_folds_shrink_to_smallest_class():
    texts, labels, ids = dataset(per_class=3)
    texts, labels, ids = texts[:7], labels[:7], ids[:7]  # 3 card, 3 refund, 1 transfer
    out = label_noise_candidates(texts, labels, NAMES, ids)
    assert out["skipped_labels"] == ["transfer"]
    assert out["n_rows"] == 6 and out["folds"] == 3
    assert all(c["label"] != "transfer" and c["suggested"] != "transfer" for c in out["candidates"])


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        label_noise_candidates(["a", "b"], [0], NAMES, ["1", "2"])
    with pytest.raises(ValueError, match="out of range"):
        label_noise_candidates(["a", "b"], [0, 7], NAMES, ["1", "2"])


def test_sentence_pairs_are_scored_with_pair_features_and_show_both_texts():
    topics = [w.split() for w in ("card arrive post envelope pin chip", "refund money return merchant receipt cancel",
                                  "transfer send account pending wire payee", "exchange rate currency euro dollar fee")]
    rng = random.Random(4)
    texts, pairs, labels = [], [], []
    for i in range(240):  # label 1: both sides from one topic (sharing two words), 0: from two topics
        first = rng.randrange(len(topics))
        same = i % 2 == 1
        a = rng.sample(topics[first], 3)
        b = a[:2] + rng.sample([w for w in topics[first] if w not in a], 1) if same else \
            rng.sample(topics[(first + 1 + rng.randrange(len(topics) - 1)) % len(topics)], 3)
        texts.append(" ".join(a + rng.sample(FILLER, 2)))
        pairs.append(" ".join(b + rng.sample(FILLER, 2)))
        labels.append(int(same))
    planted = [11, 50, 101]
    for row in planted:
        labels[row] = 1 - labels[row]
    ids = [f"row-{i}" for i in range(len(texts))]
    out = label_noise_candidates(texts, labels, ["different", "same"], ids, top=10, pairs=pairs)
    found = {c["id"]: c for c in out["candidates"]}
    assert set(found) <= {f"row-{i}" for i in planted} and len(found) >= 2  # a model of the pair finds flips, nothing else
    assert found["row-50"]["text_pair"] == pairs[50] and found["row-50"]["suggested"] == "different"
    assert f"{texts[50]} ⟷ {pairs[50]}"[:160] in markdown(out)
    with pytest.raises(ValueError, match="texts and pairs"):
        label_noise_candidates(texts, labels, ["different", "same"], ids, pairs=pairs[:-1])


def test_prepared_sentence_pairs_get_candidates_cached_apart_from_older_results(project):
    from tunekit.data import noise, prepare

    lines = ["a,b,label"] + [f"refund {w} money {i},refund {w} return,same" if i % 2 else f"card {w} arrive {i},wire {w} payee,different"
                             for i, w in enumerate(["please", "today", "now", "hi", "thanks", "help"] * 10)]
    project.write("pairs.csv", "\n".join(lines) + "\n")
    data = prepare(project.config(train="pairs.csv", text_column="a", text_pair_column="b"))
    result = noise.for_prepared(data)
    assert result is not None and result["n_rows"] == len(data.train) and result["folds"] == 5
    assert (data.directory / "label_noise-0-pairs.json").is_file()
