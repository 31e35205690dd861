"""The data report's PII scan: e-mail addresses, phone numbers, card numbers and the other kinds
``tunekit.pii`` detects, counted per split with the rows to look at.

A model fine-tuned on personal data can repeat it to anyone who asks, and a test set full of it
cannot be shared; so the report says how many rows of each split hold which kind, and names a few
rows (by id, which carries the file and line, or by file and line for conversations).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from tunekit import pii

MAX_EXAMPLES = 5
NAMES = {"email": "e-mail addresses", "phone": "phone numbers", "card": "card numbers", "iban": "IBANs",
         "ssn": "social security numbers", "ipv4": "IP addresses"}


def scan(rows: dict[str, list[dict]], texts: Callable[[dict], Iterable[str]], where: Callable[[dict], str]) -> dict:
    """Per split: ``rows`` holding any PII, ``counts`` per kind, and up to ``MAX_EXAMPLES`` ``examples``
    (``{"at", "kinds"}``); ``texts`` gives a row's texts, ``where`` names a row for a person."""
    out = {}
    for name, split in rows.items():
        counts: Counter[str] = Counter()
        flagged, examples = 0, []
        for row in split:
            found: Counter[str] = Counter()
            for text in texts(row):
                found.update(pii.contains(text))
            if not found:
                continue
            flagged += 1
            counts.update(found)
            if len(examples) < MAX_EXAMPLES:
                examples.append({"at": where(row), "kinds": sorted(found)})
        out[name] = {"rows": flagged, "counts": dict(sorted(counts.items())), "examples": examples}
    return out


def warnings(report: dict) -> list[str]:
    """One line per split holding PII: how many rows, which kinds, and where to look first."""
    out = []
    for name, split in report.items():
        if not split["rows"]:
            continue
        kinds = ", ".join(f"{NAMES.get(kind, kind)} ({n})" for kind, n in split["counts"].items())
        at = ", ".join(example["at"] for example in split["examples"])
        out.append(f"{split['rows']} {name} rows hold personal data: {kinds}; e.g. {at}")
    return out


def markdown(report: dict) -> str:
    """The PII section of a data report."""
    from tunekit.data.markdown import table

    kinds = sorted({kind for split in report.values() for kind in split["counts"]})
    if not kinds:
        return "## Personal data (PII)\n\nNone found (e-mail addresses, phone numbers, card numbers, IBANs, SSNs, IP addresses)."
    body = table(["split", "rows with PII", *(NAMES.get(k, k) for k in kinds), "e.g."],
                 [[name, split["rows"], *(split["counts"].get(k, 0) for k in kinds), ", ".join(e["at"] for e in split["examples"])]
                  for name, split in report.items()])
    return f"## Personal data (PII)\n\n{body}"
