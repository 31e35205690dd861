"""Generated-text metrics on hand-computed cases, the paired bootstrap on planted gaps, and the
report card of a generation run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import sacrebleu

from tunekit.evaluate import plots
from tunekit.report import markdown as report
from tunekit.evaluate.textgen import (
    GENERATION_METRICS,
    compare,
    generation_metrics,
    normalise_answer,
    per_example,
    side_by_side,
)


def test_exact_match_ignores_only_surrounding_and_repeated_whitespace():
    assert normalise_answer("  Paris \n\t is  nice ") == "Paris is nice"
    em = per_example(["Paris", " paris", "Paris is  nice\n", "Paris."], ["Paris ", "Paris", "Paris is nice", "Paris"])["exact_match"]
    assert em.tolist() == [1.0, 0.0, 1.0, 0.0]  # case and punctuation still count


def test_rouge_l_is_the_lcs_f1():
    # LCS of "the cat on the mat" and "the cat sat on the mat" is all 5 predicted words:
    # precision 5/5, recall 5/6, F1 = 2 * 1 * 5/6 / (1 + 5/6) = 10/11
    r = per_example(["the cat on the mat"], ["the cat sat on the mat"])["rouge_l"]
    assert r[0] == pytest.approx(10 / 11)


def test_bleu_and_chrf_of_identical_and_disjoint_text():
    same = per_example(["the quick brown fox jumps"], ["the quick brown fox jumps"])
    apart = per_example(["zzz ggg yyy"], ["the quick brown fox jumps"])  # no character in common
    assert same["bleu"][0] == pytest.approx(1.0) and same["chrf"][0] == pytest.approx(1.0)
    assert apart["bleu"][0] == pytest.approx(0.0, abs=1e-3) and apart["chrf"][0] == pytest.approx(0.0, abs=1e-3)
    corpus = generation_metrics(["a b c d e", "f g h i j"], ["a b c d e", "f g h i j"])
    assert all(0.0 <= v <= 1.0 for v in corpus.values()) and corpus == pytest.approx(dict.fromkeys(GENERATION_METRICS, 1.0))


def test_corpus_scores_are_sacrebleus_own():
    preds = ["the cat sat on the mat", "a dog ran in the park today", "hello there", "completely different words here"]
    refs = ["the cat sat on a mat", "the dog ran in the park", "hello there friend", "nothing in common with that"]
    got = generation_metrics(preds, refs)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score / 100)
    assert got["exact_match"] == 0.0 and got["rouge_l"] == pytest.approx(per_example(preds, refs)["rouge_l"].mean())


def test_empty_predictions_score_zero():
    scores = per_example(["", "   "], ["an answer", "another one"])
    assert all(v.tolist() == [0.0, 0.0] for v in scores.values())
    assert generation_metrics(["", ""], ["an answer", "another one"]) == dict.fromkeys(GENERATION_METRICS, 0.0)
    assert compare(["", ""], ["", "another one"], ["an answer", "another one"], resamples=50)["exact_match"]["diff"] == 0.5


def test_mismatched_lengths_name_the_columns():
    with pytest.raises(ValueError, match="preds=2, refs=1"):
        per_example(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="preds_model=1"):
        compare(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no rows"):
        generation_metrics([], [])


def planted(n: int = 400, model_right: float = 0.8, base_right: float = 0.5, seed: int = 0):
    """References of random words; the model answers exactly the first 80% of rows, the baseline
    the first 50% (so exactly 0.30 apart on exact match), everything else gets a wrong answer."""
    rng = np.random.default_rng(seed)
    words = ["red", "green", "blue", "cat", "dog", "sat", "ran", "on", "the", "mat", "park", "fast", "slow"]
    refs = [" ".join(rng.choice(words, 6)) for _ in range(n)]
    model = [r if i < model_right * n else "no idea" for i, r in enumerate(refs)]
    base = [r if i < base_right * n else "no idea" for i, r in enumerate(refs)]
    return base, model, refs


def test_bootstrap_covers_a_planted_gain_and_excludes_zero():
    base, model, refs = planted()
    r = compare(base, model, refs, resamples=1000, seed=0)
    em = r["exact_match"]
    assert (em["baseline"], em["model"]) == (0.5, 0.8) and em["diff"] == pytest.approx(0.30)
    assert 0 < em["low"] < 0.30 < em["high"] and em["p_value"] < 0.01
    for name in GENERATION_METRICS:
        assert set(r[name]) == {"baseline", "model", "diff", "low", "high", "p_value"}
        assert r[name]["low"] > 0  # every metric sees the gain
        assert r[name]["model"] == pytest.approx(generation_metrics(model, refs)[name])


def test_bootstrap_of_identical_predictions_is_exactly_zero():
    _, model, refs = planted(n=100)
    r = compare(model, list(model), refs, resamples=200)
    for name in GENERATION_METRICS:
        assert (r[name]["diff"], r[name]["low"], r[name]["high"], r[name]["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_side_by_side_is_a_seeded_sample_in_test_order():
    base, model, refs = planted(n=50)
    prompts = [f"prompt {i}" for i in range(50)]
    rows = side_by_side(prompts, refs, base, model, n=5, seed=3)
    assert rows == side_by_side(prompts, refs, base, model, n=5, seed=3)
    assert len(rows) == 5 and [int(r["prompt"].split()[1]) for r in rows] == sorted(int(r["prompt"].split()[1]) for r in rows)
    for r in rows:
        i = int(r["prompt"].split()[1])
        assert (r["reference"], r["baseline"], r["fine_tuned"]) == (refs[i], base[i], model[i])
        assert r["rouge_l_fine_tuned"] == pytest.approx(per_example([model[i]], [refs[i]])["rouge_l"][0])
    assert len(side_by_side(prompts, refs, base, model, n=500, seed=0)) == 50


def generation_card(tmp_path) -> dict:
    """A generation run's card, shaped as the pipeline writes it."""
    refs = ["olleh", "dlrow", "a|b", "tac"]
    base_preds, model_preds = ["hello", "", "<script>x</script>", "cat"], ["olleh", "dlrow", "a|b", "tac\nextra"]
    prompts = ["Reverse: hello", "Reverse: world", "Reverse: b|a", "Reverse:\ncat"]
    history = [{"epoch": 1, "train_loss": 2.0, "val_loss": 0.5, "seconds": 1.2}, {"epoch": 2, "train_loss": 0.4, "val_loss": 0.12, "seconds": 1.1}]
    curve = plots.training_curve(history, "loss", tmp_path / "training_curve.png")
    few = {"exact_match": 0.0, "rouge_l": 0.12, "bleu": 0.01, "chrf": 0.1}
    return {
        "task": "generation", "name": "reverse", "run_id": "20250101-000000-abcd", "primary": "rouge_l", "method": "lora",
        "base_model": "/tmp/tiny-llama", "adapter_dir": str(tmp_path / "adapter"),
        "data": {"fingerprint": "f" * 64, "test_fingerprint": "e" * 64, "reused": False, "rows": {"train": 80, "validation": 10, "test": 20},
                 "report_path": "/ws/datasets/f/report.md", "template": "chatml",
                 "overlength": {"policy": "error", "over": 0, "truncated": 0, "dropped": 0}},
        "baseline": {"name": "base model 3-shot", "metrics": few, "seconds": 3.2},
        "baselines": [{"name": "base model zero-shot", "metrics": {"exact_match": 0.0, "rouge_l": 0.05, "bleu": 0.003, "chrf": 0.07}},
                      {"name": "base model 3-shot", "metrics": few}],
        "model": {"metrics": {"exact_match": 0.95, "rouge_l": 0.98, "bleu": 0.9, "chrf": 0.97, "val_loss": 0.12,
                              "val_perplexity": 1.13, "test_loss": 0.13, "test_perplexity": 1.14, "scored_rows": 20}},
        "analysis": {"versus_baseline": compare(base_preds, model_preds, refs, resamples=100),
                     "side_by_side": side_by_side(prompts, refs, base_preds, model_preds, n=4, seed=0),
                     "decoding": {"max_new_tokens": 32, "strategy": "greedy"}},
        "train": {"history": history, "best_epoch": 2, "best_score": 0.12, "stopped_early": False, "trainable_params": 1024,
                  "total_params": 65536, "seconds": 2.3, "train_tokens_per_second": 1543.2, "peak_memory_mb": 210.0},
        "registry": {"version": "1", "alias": "champion", "passed": True, "reason": "beats the baseline by 0.86 rouge_l",
                     "champion": None, "mlflow_run_id": "run123", "tracking_uri": "sqlite:///ws/mlflow.db"},
        "plots": {"training_curve": str(curve)},
        "lineage": {"git_commit": None, "config_hash": "c" * 64, "versions": {"torch": "2.13.0", "sacrebleu": "2.6.0"}},
    }


def test_generation_report_card(tmp_path):
    card = generation_card(tmp_path)
    md_path, js_path, page_path = report.write(card, tmp_path)
    md, page = md_path.read_text(), page_path.read_text()
    assert json.loads(js_path.read_text()) == json.loads(json.dumps(card))

    assert [m for m, *_ in report.comparison_rows(card)] == list(GENERATION_METRICS)
    vs = card["analysis"]["versus_baseline"]["rouge_l"]
    assert f"| rouge_l **(primary)** | 0.1200 | 0.9800 | +0.8600 | [{vs['low']:+.4f}, {vs['high']:+.4f}] |" in md
    assert "| base model zero-shot | 0.0000 | 0.0500 | 0.0030 | 0.0700 |" in md
    assert "| base model 3-shot **(best, in the headline)** | 0.0000 | 0.1200 | 0.0100 | 0.1000 |" in md
    assert "| validation | 0.1200 | 1.130 |" in md and "| test | 0.1300 | 1.140 |" in md
    assert "greedy, at most 32 new tokens" in md and "chat template `chatml`" in md
    assert "| 2 | 0.4000 | 0.1200 | 1.1 |" in md and "1,543 training tokens/s" in md
    # side by side: pipes and markup stay text, newlines become line breaks, empty answers show
    assert "| Reverse: hello | olleh | hello | olleh | 0.00 / 1.00 |" in md
    assert "| Reverse: b\\|a | a\\|b | \\<script\\>x\\</script\\> | a\\|b |" in md
    assert "| Reverse:<br>cat | tac | cat | tac<br>extra |" in md
    assert "| Reverse: world | dlrow | *(empty)* | dlrow |" in md
    side = re.search(r"## Side by side.*?\n\n((?:\|.*\n)+)", md)[1].splitlines()
    assert len(side) == 2 + 4 and all(len(re.findall(r"(?<!\\)\|", row)) == 6 for row in side)  # no cell split by a stray pipe

    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "<td>a|b</td>" in page
    assert "base model zero-shot" in page and "1.140" in page
    assert not re.search(r'src="(?!data:)', page), "report.html must embed everything it shows"
    assert 'src="data:image/png;base64,' in page
