"""Behavioural suites: files load into cases, every mistake names its case and field, cases pass and fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunekit.errors import ConfigError
from tunekit.evaluate.suite import load_suite, run_suite

LABELS = ["card_arrival", "request_refund", "cancel_transfer", "balance"]
SUITE = """\
cases:
  - name: card not arrived
    must_predict: card_arrival
    texts: ["my card still hasn't come", "where is my card?"]
  - name: not a refund
    must_not_predict: request_refund
    texts: ["I love the app"]
  - name: polite variants agree
    invariant_pairs:
      - ["cancel my transfer", "please cancel my transfer"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def keyword_predict(texts: list[str]) -> list[str]:
    """A fake model: the first label whose keyword the text contains, else ``balance``."""
    keywords = {"card": "card_arrival", "refund": "request_refund", "love": "request_refund", "cancel": "cancel_transfer"}
    return [next((label for word, label in keywords.items() if word in t.lower()), "balance") for t in texts]


def test_docstring_example_loads(tmp_path):
    cases = load_suite(write(tmp_path, SUITE), LABELS)
    assert [c.kind for c in cases] == ["must_predict", "must_not_predict", "invariant_pairs"]
    assert cases[2].invariant_pairs == [("cancel my transfer", "please cancel my transfer")]


def test_run_suite_passes_and_fails_cases(tmp_path):
    calls = []

    def predict(texts):
        calls.append(texts)
        return keyword_predict(texts)

    out = run_suite(load_suite(write(tmp_path, SUITE), LABELS), predict)
    assert (out["passed"], out["failed"], out["pass_rate"]) == (2, 1, pytest.approx(2 / 3))
    by_name = {c["name"]: c for c in out["cases"]}
    assert by_name["card not arrived"]["passed"] and by_name["polite variants agree"]["passed"]
    assert by_name["not a refund"] == {"name": "not a refund", "kind": "must_not_predict", "label": "request_refund",
                                       "passed": False, "n": 1, "failures": [{"text": "I love the app", "predicted": "request_refund"}]}
    assert len(calls) == 1 and len(calls[0]) == 5  # one batched call for all texts of the suite


def test_a_case_fails_when_any_text_fails(tmp_path):
    suite = SUITE.replace('"where is my card?"', '"where is my money?"').replace("please cancel", "please stop")
    out = run_suite(load_suite(write(tmp_path, suite), LABELS), keyword_predict)
    card, _, pairs = out["cases"]
    assert not card["passed"] and card["failures"] == [{"text": "where is my money?", "predicted": "balance"}]
    assert not pairs["passed"]
    assert pairs["failures"] == [{"texts": ["cancel my transfer", "please stop my transfer"], "predicted": ["cancel_transfer", "balance"]}]
    assert out["passed"] == 0 and out["pass_rate"] == 0.0


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_suite(write(tmp_path, text), LABELS)
    assert str(tmp_path / "suite.yaml") in str(info.value)
    return str(info.value)


def test_unknown_label_names_case_field_and_valid_labels(tmp_path):
    msg = load_error(tmp_path, SUITE.replace("must_predict: card_arrival", "must_predict: card_arival"))
    assert "line 3: cases[0] 'card not arrived': must_predict: unknown label 'card_arival'" in msg
    assert "did you mean card_arrival?" in msg and "request_refund" in msg


@pytest.mark.parametrize("case, expected", [
    ("  - name: two kinds\n    must_predict: balance\n    must_not_predict: card_arrival\n    texts: [a]\n",
     "cases[0] 'two kinds': must_predict/must_not_predict/invariant_pairs: a case needs exactly one of these (found must_predict, must_not_predict)"),
    ("  - name: no kind\n    texts: [a]\n",
     "cases[0] 'no kind': must_predict/must_not_predict/invariant_pairs: a case needs exactly one of these (found none)"),
    ("  - name: no texts\n    must_predict: balance\n    texts: []\n",
     "line 4: cases[0] 'no texts': texts: is empty or missing"),
    ("  - name: blank text\n    must_predict: balance\n    texts: [ok, '  ']\n",
     "line 4: cases[0] 'blank text': texts[1]: is an empty text"),
    ("  - name: bad key\n    must_predict: balance\n    text: [a]\n",
     "line 4: cases[0] 'bad key': text: unknown key; valid keys: name, must_predict"),
    ("  - name: bad pair\n    invariant_pairs: [[a, b, c]]\n",
     "line 3: cases[0] 'bad pair': invariant_pairs[0]: a pair needs exactly 2 texts"),
    ("  - name: short pair\n    invariant_pairs: [[a, b], [c]]\n",
     "line 3: cases[0] 'short pair': invariant_pairs[1]: a pair needs exactly 2 texts"),
    ("  - name: pairs and texts\n    invariant_pairs: [[a, b]]\n    texts: [c]\n",
     "line 4: cases[0] 'pairs and texts': texts: is not used by an invariant_pairs case"),
    ("  - 12\n", "line 2: cases[0]: must be a mapping"),
    ("  - must_predict: balance\n    texts: [a]\n",
     "line 2: cases[0]: name: required, but missing"),
])
def test_each_case_error_names_the_case_and_field(tmp_path, case, expected):
    assert expected in load_error(tmp_path, "cases:\n" + case)


def test_every_problem_is_reported_at_once(tmp_path):
    text = SUITE.replace("card_arrival", "nope").replace("request_refund", "nada")
    msg = load_error(tmp_path, text)
    assert "2 problem(s)" in msg and "cases[0]" in msg and "cases[1]" in msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    msg = load_error(tmp_path, SUITE.replace('"where is my card?"]', '"where is my card?"'))
    assert "line 5: not valid YAML" in msg


def test_file_shape_errors(tmp_path):
    assert "one key, `cases`" in load_error(tmp_path, "case: []\n")
    assert "one key, `cases`" in load_error(tmp_path, "- a\n")
    with pytest.raises(ConfigError, match="not found"):
        load_suite(tmp_path / "missing.yaml", LABELS)
