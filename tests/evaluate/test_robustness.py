"""Perturbations are seeded and really perturb; flip rates count only texts that changed."""

from __future__ import annotations

import random

import pytest

from tunekit.evaluate.robustness import PERTURBATIONS, flip_rates, punctuation, typo, whitespace

TEXTS = [
    "my card still has not arrived",
    "please refund the purchase",
    "where is my transfer?",
    "cancel the payment now!",
    "how long does delivery take",
    "i want my money back",
]


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbations_are_deterministic_given_the_seed(name):
    fn = PERTURBATIONS[name]
    first = [fn(t, random.Random(7)) for t in TEXTS]
    assert first == [fn(t, random.Random(7)) for t in TEXTS]


@pytest.mark.parametrize("name", ["typo", "uppercase", "punctuation", "whitespace"])
def test_perturbations_change_the_text(name):
    rng = random.Random(0)
    assert all(PERTURBATIONS[name](t, rng) != t for t in TEXTS)


def test_typo_changes_exactly_one_word_by_one_letter():
    for seed in range(30):
        for text in TEXTS:
            before, after = text.split(" "), typo(text, random.Random(seed)).split(" ")
            assert len(before) == len(after)
            diff = [(a, b) for a, b in zip(before, after) if a != b]
            assert len(diff) == 1, (text, after)
            old, new = diff[0]
            assert len(old) >= 4 and (old[0], old[-1]) == (new[0], new[-1])
            if len(new) == len(old):  # a swap: two adjacent letters trade places
                at = [i for i in range(len(old)) if old[i] != new[i]]
                assert len(at) == 2 and at[1] == at[0] + 1 and sorted(old) == sorted(new)
            else:  # one letter deleted or doubled
                assert abs(len(new) - len(old)) == 1


def test_typo_leaves_text_without_long_words_alone():
    assert typo("hi to you", random.Random(0)) == "hi to you"


def test_punctuation_and_whitespace():
    assert punctuation("where is it?!", random.Random(0)) == "where is it"
    assert punctuation("where is it ", random.Random(0))[:-1] in {"where is it?", "where is it!", "where is it."}
    for seed in range(10):
        out = whitespace("a b", random.Random(seed))
        assert out.split() == ["a", "b"] and len(out) == 4


def fake_predict(texts: list[str]) -> list[int]:
    """Label 1 when the text has an uppercase letter: blind to everything but case."""
    return [int(any(c.isupper() for c in t)) for t in texts]


def test_flip_rates_with_a_case_sensitive_predictor():
    out = flip_rates(fake_predict, TEXTS, seed=3)
    assert set(out) == set(PERTURBATIONS)
    assert out["uppercase"]["flip_rate"] == 1.0 and out["uppercase"]["n_changed"] == len(TEXTS)
    assert out["whitespace"]["flip_rate"] == 0.0 and out["whitespace"]["n_changed"] == len(TEXTS)
    assert out["lowercase"] == {"flip_rate": 0.0, "n": len(TEXTS), "n_changed": 0, "n_flipped": 0, "examples": []}
    examples = out["uppercase"]["examples"]
    assert len(examples) == 5
    assert examples[0]["perturbed"] == examples[0]["original"].upper()
    assert (examples[0]["before"], examples[0]["after"]) == (0, 1)
    assert out == flip_rates(fake_predict, TEXTS, seed=3)


def test_flip_rates_samples_and_checks_the_predictor():
    out = flip_rates(fake_predict, TEXTS, sample=2)
    assert all(r["n"] == 2 for r in out.values())
    with pytest.raises(ValueError, match="returned 1 labels for 6 texts"):
        flip_rates(lambda texts: [0], TEXTS)
