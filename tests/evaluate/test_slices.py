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
