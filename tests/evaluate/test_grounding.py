"""Grounding checks on answers whose quotes and content words are counted by hand."""

from __future__ import annotations

import pytest

from tunekit.evaluate.grounding import check_grounding, grounding_rate, normalise, quoted_spans

CONTEXT = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was painted red at first."


def test_quotes_from_mixed_styles_in_answer_order():
    answer = (
        'He said "the tower is tall", called it “iron lady”, wrote \'built in 1889\', '
        "ran `pip install tunekit` and ‘looked up’; said \"ok\"."
    )
    assert quoted_spans(answer) == ["the tower is tall", "iron lady", "built in 1889", "pip install tunekit",
                                    "looked up", "ok"]


def test_contractions_possessives_and_single_words_are_not_quotes():
    # Apostrophes inside words (don't, it's, it’s, dogs') never open a span; one word in single
    # quotes or backticks is emphasis; "x" is under 2 characters; "..." has no letters.
    answer = "Don't worry, it's fine, it’s the dogs' bowls and the cats' toys; 'one' `x` \"x\" \"...\""
    assert quoted_spans(answer) == []


def test_apostrophe_inside_a_single_quoted_span_stays_in_it():
    assert quoted_spans("she wrote 'it's a test' twice") == ["it's a test"]


def test_nested_quote_is_reported_once():
    assert quoted_spans('he said "call it \'iron lady\' now"') == ["call it 'iron lady' now"]


def test_normalise():
    assert normalise("  “Paris.”  ") == "paris"
    assert normalise("Eiffel — Tower\n\t PARIS!") == "eiffel - tower paris"


def test_verbatim_quote_with_other_case_and_trailing_punctuation_is_found():
    result = check_grounding('The guide says it was "COMPLETED IN 1889 for the world’s fair."', CONTEXT)
    assert result["quotes"] == [{"text": "COMPLETED IN 1889 for the world’s fair.", "found": True}]
    assert (result["quotes_found"], result["quotes_missing"]) == (1, 0)
    assert result["grounded"] is True


def test_fabricated_quote_makes_an_otherwise_supported_answer_ungrounded():
    # Every content word (tower, painted, red, 1889) is in the context, so support is 1.0;
    # but the words never appear in this order, so the quote is missing.
    result = check_grounding('The tower was "painted red in 1889".', CONTEXT)
    assert result["support"] == 1.0
    assert result["quotes"] == [{"text": "painted red in 1889", "found": False}]
    assert (result["quotes_found"], result["quotes_missing"]) == (0, 1)
    assert result["grounded"] is False


def test_quote_must_match_on_word_boundaries():
    # "art of the race" is a substring of "start of the race" but not a quotation of it.
    assert check_grounding('It was "art of the race".', "The start of the race.")["quotes_missing"] == 1
    assert check_grounding('It was "start of the race".', "The start of the race.")["quotes_missing"] == 0


def test_ellipsis_in_a_quote_marks_an_omission():
    assert check_grounding('"The Eiffel Tower … for the World\'s Fair"', CONTEXT)["quotes_missing"] == 0
    assert check_grounding('"The Eiffel Tower ... for the Olympics"', CONTEXT)["quotes_missing"] == 1


def test_support_counted_by_hand():
    # Answer words: the(stop) tower(yes) in(short) paris(yes) was(stop) completed(yes) in(short) 1925(no)
    # -> content words tower, paris, completed, 1925; 3 of 4 in the context -> 0.75.
    result = check_grounding("The tower in Paris was completed in 1925.", CONTEXT)
    assert result["support"] == 0.75
    assert result["unsupported_words"] == ["1925"]
    assert result["grounded"] is True


def test_support_counts_unique_words_and_folds_plurals():
    # Unique content words: paris (yes), london (no) -> 1 of 2; repeating "Paris" does not help.
    assert check_grounding("Paris Paris Paris Paris London", CONTEXT)["support"] == 0.5
    # "towers" folds to "tower", "Eiffel's" drops its possessive -> both supported.
    assert check_grounding("Eiffel's towers", CONTEXT)["support"] == 1.0


def test_unsupported_words_are_unique_in_order_and_capped_at_ten():
    answer = "zinc argon boron zinc xenon radon neon helium iron cobalt nickel copper silver tower"
    result = check_grounding(answer, CONTEXT)
    assert result["unsupported_words"] == ["zinc", "argon", "boron", "xenon", "radon", "neon", "helium",
                                           "iron", "cobalt", "nickel"]
    # 13 unique content words, only "tower" in the context -> 1/13.
    assert result["support"] == pytest.approx(1 / 13)
    assert result["grounded"] is False


def test_answer_of_only_stopwords_has_full_support():
    result = check_grounding("It is what it is, and that was that.", CONTEXT)
    assert result["support"] == 1.0
    assert result["unsupported_words"] == []
    assert result["grounded"] is True


def test_min_support_threshold_at_the_boundary():
    answer = "The tower in Paris was completed in 1925."  # support exactly 0.75, as counted above
    assert check_grounding(answer, CONTEXT, min_support=0.75)["grounded"] is True
    assert check_grounding(answer, CONTEXT, min_support=0.76)["grounded"] is False
    with pytest.raises(ValueError, match="min_support"):
        check_grounding(answer, CONTEXT, min_support=1.5)


def test_grounding_rate_totals():
    answers = [
        'It was "completed in 1889".',          # quote found, support 1.0 -> grounded
        'The tower was "painted red in 1889".',  # quote missing, support 1.0 -> not grounded
        "Bananas ripen quickly.",                # bananas, ripen, quickly: none in context -> support 0.0
    ]
    result = grounding_rate(answers, [CONTEXT] * 3)
    assert result["n"] == 3
    assert result["grounded"] == 1
    assert result["rate"] == pytest.approx(1 / 3)
    assert result["quotes_missing"] == 1
    assert result["mean_support"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)


def test_grounding_rate_rejects_mismatched_lengths_naming_both():
    with pytest.raises(ValueError, match="2 answers but 1 contexts"):
        grounding_rate(["a b", "c d"], [CONTEXT])
    with pytest.raises(ValueError, match="no answers"):
        grounding_rate([], [])
