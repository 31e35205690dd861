"""Invariance under harmless perturbations (CheckList's INV tests, Ribeiro et al. 2020).

Test accuracy says how a model does on text that looks like its training data; users type with
typos, in capitals, without the question mark. A change like that should never change the intent,
so the share of predictions that flip under it measures brittleness that accuracy hides, and
needs no labels: only the model's own prediction before and after.

Each perturbation is ``(text, rng) -> text`` and deterministic given the ``random.Random`` it is
handed, so a report can be reproduced from its seed. A perturbation may leave a text unchanged
(``typo`` on a text with no word of 4+ letters, ``lowercase`` on lowercase text); such texts say
nothing about invariance and are not counted, which is why each result reports ``n_changed``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

__all__ = ["PERTURBATIONS", "flip_rates", "lowercase", "punctuation", "typo", "uppercase", "whitespace"]

MAX_EXAMPLES = 5
_WORD = re.compile(r"[^\W\d_]{4,}")  # a run of 4+ letters: short words become unreadable with a typo
_TRAILING_PUNCT = ".?!,;:…"


def typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters, delete one or double one, inside one word of 4+ letters.

    The first and last letters stay put (people read past inner-letter typos, so the intent is
    still clear); a swap of two equal letters would change nothing and doubles a letter instead.
    """
    words = list(_WORD.finditer(text))
    if not words:
        return text
    match = rng.choice(words)
    word, k = match.group(), rng.randrange(1, len(match.group()) - 2)
    op = rng.choice(["swap", "delete", "double"])
    if op == "swap" and word[k] != word[k + 1]:
        new = word[:k] + word[k + 1] + word[k] + word[k + 2 :]
    elif op == "delete":
        new = word[:k] + word[k + 1 :]
    else:
        new = word[: k + 1] + word[k:]
    return text[: match.start()] + new + text[match.end() :]


def lowercase(text: str, rng: random.Random) -> str:
    return text.lower()


def uppercase(text: str, rng: random.Random) -> str:
    return text.upper()


def punctuation(text: str, rng: random.Random) -> str:
    """Drop the trailing punctuation, or end the text with "?", "!" or "." if it has none."""
    body = text.rstrip()
    tail = text[len(body) :]
    if body and body[-1] in _TRAILING_PUNCT:
        return body.rstrip(_TRAILING_PUNCT) + tail
    return body + rng.choice("?!.") + tail


def whitespace(text: str, rng: random.Random) -> str:
    """Double one space, or add a leading or trailing space."""
    spaces = [m.start() for m in re.finditer(" ", text)]
    op = rng.choice(["double", "leading", "trailing"] if spaces else ["leading", "trailing"])
    if op == "double":
        at = rng.choice(spaces)
        return text[:at] + " " + text[at:]
    return " " + text if op == "leading" else text + " "


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "typo": typo,
    "lowercase": lowercase,
    "uppercase": uppercase,
    "punctuation": punctuation,
    "whitespace": whitespace,
}


def flip_rates(predict: Callable[[list[str]], list[int]], texts: list[str], seed: int = 0, sample: int = 500) -> dict:
    """Per perturbation: the share of changed texts whose predicted label id changes.

    ``predict`` maps texts to label ids (the caller maps ids to names). The same seeded sample of
    at most ``sample`` texts goes through every perturbation, and each perturbation draws from its
    own seeded generator, so adding one does not change the others' results. A perturbation that
    changed no text reports ``flip_rate`` 0.0 with ``n_changed`` 0.
    """
    rng = random.Random(seed)
    chosen = [texts[i] for i in sorted(rng.sample(range(len(texts)), min(sample, len(texts))))]
    before = _predict(predict, chosen)
    return {name: _flips(predict, chosen, before, fn, random.Random(f"{seed}:{name}"))
            for name, fn in PERTURBATIONS.items()}


def _flips(predict: Callable[[list[str]], list[int]], texts: list[str], before: list[int],
           perturb: Callable[[str, random.Random], str], rng: random.Random) -> dict:
    perturbed = [perturb(t, rng) for t in texts]
    changed = [i for i, (t, p) in enumerate(zip(texts, perturbed)) if t != p]
    after = dict(zip(changed, _predict(predict, [perturbed[i] for i in changed])))
    flipped = [i for i in changed if after[i] != before[i]]
    return {
        "flip_rate": len(flipped) / len(changed) if changed else 0.0,
        "n": len(texts),
        "n_changed": len(changed),
        "n_flipped": len(flipped),
        "examples": [{"original": texts[i], "perturbed": perturbed[i], "before": before[i], "after": after[i]}
                     for i in flipped[:MAX_EXAMPLES]],
    }


def _predict(predict: Callable[[list[str]], list[int]], texts: list[str]) -> list[int]:
    """Label ids as plain ints (numpy ints do not serialise to JSON); no call for no texts."""
    if not texts:
        return []
    ids = [int(p) for p in predict(texts)]
    if len(ids) != len(texts):
        raise ValueError(f"predict returned {len(ids)} labels for {len(texts)} texts")
    return ids
