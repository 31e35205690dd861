"""Grounding check for generated answers given a context: is what the answer says in the source?

For generation tasks with a supplied context (retrieval-augmented answers, summaries) two failures
are cheap to catch without a judge model:

- fabricated quotes: an answer that puts words in quotation marks claims they are verbatim, so each
  quoted span must appear in the context (after case, curly quotes, dashes, whitespace and edge
  punctuation are normalised; an ellipsis inside a quote marks an omission, so each part must appear);
- off-context answers: when most of the answer's content words never occur in the context, the
  answer was probably made up (or drawn from the model's memory rather than the source).

What it does not catch: a paraphrased falsehood. "The tower was completed in 1889" and "The tower
was not completed in 1889" use the same content words, and a wrong date copied from elsewhere in the
context is still "supported". This is a lexical check, not a fact checker; treat ``grounded: True``
as "nothing obviously invented", and a failure as a row worth reading.
"""

from __future__ import annotations

import re

__all__ = ["quoted_spans", "normalise", "check_grounding", "grounding_rate"]

# Common English function words of 3+ letters (shorter words are never content words anyway).
# Kept small on purpose: a word missing here only makes the check slightly stricter.
STOPWORDS = frozenset(
    """
    the and for are but not nor yet you your yours all any can had has have having her hers him his
    how its was were will would could should shall might must may one our ours out who whom whose why
    what when where which while she they them their theirs there these those this that than then
    with within without from into onto upon about above below over under after before between
    through during until against again also only some such very just more most much many few other
    each both because being been does did doing done here same own too off once further per via
    itself himself herself themselves myself yourself ourselves let get got say says said
    don't doesn't didn't isn't aren't wasn't weren't can't cannot won't wouldn't shouldn't couldn't
    haven't hasn't hadn't i'm you're we're they're i've you've we've they've i'll you'll we'll they'll
    i'd you'd we'd they'd
    """.split()
)

# Quote spans, each with the reason for its shape:
# - double quotes (straight or curly, mixed pairs tolerated since answers mix them freely);
# - single quotes only when the opening mark follows a non-word character and the closing mark is
#   not followed by one, so the apostrophes in "don't", "it's" and "the dogs' bowls" never open a span;
# - inline code in backticks, but not fenced blocks (a ``` block is code, not a quotation).
_QUOTE_PATTERNS = (
    (re.compile(r"[\"“]([^\"“”]+)[\"”]"), 1),
    (re.compile(r"(?<!\w)'(?=\S)(.+?)(?<=\S)'(?!\w)"), 2),
    (re.compile(r"(?<!\w)‘(?=\S)(.+?)(?<=\S)’(?!\w)"), 2),
    (re.compile(r"(?<!`)`([^`\n]+)`(?!`)"), 2),
)
_UNIFY = str.maketrans({"‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'",
                        "“": '"', "”": '"', "„": '"', "‟": '"', "″": '"',
                        "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
                        "…": "..."})
_EDGE_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")
_ELLIPSIS = re.compile(r"\s*(?:\[\.\.\.\]|\.\.\.)\s*")
_WORD = re.compile(r"\w+(?:'\w+)*")


def quoted_spans(answer: str) -> list[str]:
    """Spans the answer presents as quotations, in answer order. Single quotes and backticks need
    at least two words inside, because one-word 'scare quotes' and `identifiers` are emphasis, not
    claims of verbatim text. A span without a letter or digit ("...", "--") quotes nothing."""
    found: list[tuple[int, int, str]] = []
    for pattern, min_words in _QUOTE_PATTERNS:
        for m in pattern.finditer(answer):
            span = m.group(1).strip()
            if len(span) >= 2 and len(span.split()) >= min_words and re.search(r"[^\W_]", span):
                found.append((m.start(), m.end(), span))
    spans, end = [], -1
    for start, stop, span in sorted(found):
        if start >= end:  # a span nested in an earlier one ('...' inside "...") is already checked
            spans.append(span)
            end = stop
    return spans


def normalise(text: str) -> str:
    """Casefolded text with curly quotes and dashes made straight, whitespace collapsed and
    punctuation stripped from both ends, so a quote "Paris." matches a context that says "paris,"."""
    text = " ".join(text.translate(_UNIFY).casefold().split())
    return _EDGE_PUNCT.sub("", text)


def _contains(context: str, quote: str) -> bool:
    """Whether the normalised quote occurs in the normalised context on word boundaries (so "art"
    is not found in "start"); parts separated by an ellipsis must each occur."""
    parts = [p for p in (normalise(part) for part in _ELLIPSIS.split(normalise(quote))) if p]
    return bool(parts) and all(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", context) for p in parts)


def _words(text: str) -> list[str]:
    """Normalised word tokens; a possessive 's is dropped so "Eiffel's" matches "Eiffel"."""
    words = _WORD.findall(normalise(text))
    return [w[:-2] if w.endswith("'s") and w not in STOPWORDS else w for w in words]


def _fold(word: str) -> str:
    """Crude plural fold ("towers" -> "tower") so an inflected word is not reported as invented;
    applied to both sides, so it only has to be consistent, not correct."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _content_words(text: str) -> list[str]:
    """Unique content words (3+ characters, not stopwords) in first-occurrence order. Unique,
    because repeating a context word should not raise an answer's support."""
    return list(dict.fromkeys(w for w in _words(text) if len(w) >= 3 and w not in STOPWORDS))


def check_grounding(answer: str, context: str, min_support: float = 0.5) -> dict:
    """Quote and word-support check of one answer against its context. ``grounded`` is True when
    every quoted span occurs in the context and at least ``min_support`` of the answer's content
    words do; an answer with no content words has support 1.0 (it claims nothing to check)."""
    if not 0.0 <= min_support <= 1.0:
        raise ValueError(f"min_support: must be between 0 and 1, got {min_support}")
    norm_context = normalise(context)
    quotes = [{"text": q, "found": _contains(norm_context, q)} for q in quoted_spans(answer)]
    context_words = {_fold(w) for w in _words(context)}
    content = _content_words(answer)
    unsupported = [w for w in content if _fold(w) not in context_words]
    support = (len(content) - len(unsupported)) / len(content) if content else 1.0
    missing = sum(not q["found"] for q in quotes)
    return {
        "quotes": quotes,
        "quotes_found": len(quotes) - missing,
        "quotes_missing": missing,
        "support": support,
        "unsupported_words": unsupported[:10],
        "grounded": missing == 0 and support >= min_support,
    }


def grounding_rate(answers: list[str], contexts: list[str], min_support: float = 0.5) -> dict:
    """Totals of ``check_grounding`` over paired answers and contexts: how many are grounded, how
    many quotes were not found, and the mean support."""
    if len(answers) != len(contexts):
        raise ValueError(f"grounding_rate: got {len(answers)} answers but {len(contexts)} contexts; "
                         "each answer needs the context it was generated from")
    if not answers:
        raise ValueError("grounding_rate: got no answers; a rate over nothing is undefined")
    checks = [check_grounding(a, c, min_support) for a, c in zip(answers, contexts)]
    grounded = sum(c["grounded"] for c in checks)
    return {
        "n": len(checks),
        "grounded": grounded,
        "rate": grounded / len(checks),
        "quotes_missing": sum(c["quotes_missing"] for c in checks),
        "mean_support": sum(c["support"] for c in checks) / len(checks),
    }
