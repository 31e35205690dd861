import numpy as np

from tunekit.evaluate.slices import length_buckets, slice_table


def test_length_buckets_by_word_count():
    texts = ["a b", "a b c d e f", "w " * 12, "w " * 30]
    assert length_buckets(texts, [5, 10, 20]) == ["<=5 words", "6-10 words", "11-20 words", ">20 words"]


def test_slice_table_flags_the_slice_where_the_model_is_worse():
    labels = ["x", "y"]
    y = np.array([0, 1] * 20)
    base = y.copy()
    model = y.copy()
    model[:10] = 1 - model[:10]  # the model is wrong on the first 10 rows, all in channel "app"
    channel = ["app"] * 20 + ["web"] * 20
    rows = {r["slice"]: r for r in slice_table({"channel": channel}, y, model, base, labels, "accuracy")}
    assert rows["channel=app"]["accuracy"] == 0.5 and rows["channel=app"]["worse"]
    assert rows["channel=web"]["accuracy"] == 1.0 and not rows["channel=web"]["worse"]
    assert rows["channel=app"]["n"] == 20


def test_small_slices_are_left_out():
    y = np.zeros(12, dtype=int)
    rows = slice_table({"g": ["big"] * 11 + ["tiny"]}, y, y, y, ["x"], "accuracy")
    assert [r["slice"] for r in rows] == ["g=big"]


def test_predictions_of_sentence_pairs_keep_both_texts(tmp_path):
    """Issue 18 item 8: a pair task's predictions.csv shows the second text beside the first."""
    import csv
    from types import SimpleNamespace

    import datasets
    import numpy as np

    from tunekit.evaluate import _write_predictions

    test = datasets.Dataset.from_dict({"id": ["test-1", "test-2"], "text": ["a cat", "a dog"], "text_pair": ["a kitten", "a car"],
                                       "label": [1, 0]})
    data = SimpleNamespace(labels=["different", "same"], test=test)
    probs, base = np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([[0.6, 0.4], [0.3, 0.7]])
    rows = list(csv.DictReader(_write_predictions(tmp_path / "p.csv", data, probs, base).open()))
    assert [(r["text"], r["text_pair"], r["label"], r["predicted"], r["baseline_predicted"]) for r in rows] == [
        ("a cat", "a kitten", "same", "same", "different"), ("a dog", "a car", "different", "different", "same")]
