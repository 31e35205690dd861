"""Personal data in free text: one set of detectors for the server's guardrails, its request log and
the data report's PII scan.

    >>> from tunekit import pii
    >>> pii.find("mail jane@example.com or call +44 20 7946 0958")
    [('email', 5, 21), ('phone', 30, 46)]
    >>> pii.redact("card 4111.1111.1111.1111, IBAN de89 3704 0044 0532 0130 00")
    'card [CARD], IBAN [IBAN]'
    >>> pii.contains("jane@example.com, joe@example.org")
    {'email': 2}

``KINDS`` names what is found, each replaced by its ``PLACEHOLDERS`` entry when redacted:

    email   jane.doe@example.com                                  [EMAIL]
    phone   +44 20 7946 0958, (555) 123-4567, 020 7946 0958       [PHONE]
    card    13-19 digits, grouped by spaces, dashes or dots, Luhn  [CARD]
    iban    DE89 3704 0044 0532 0130 00, upper or lower case       [IBAN]
    ssn     US social security number 078-05-1120                  [SSN]
    ipv4    192.168.1.10                                           [IP]

Every detector is lexical: a regex finds candidates and a validator drops those that cannot be real
(Luhn for cards, ISO 13616 mod-97 and the country's length for IBANs, digit counts for phones). A
bare run of digits without ``+`` or separators is never a phone: order numbers, account numbers
and years look just like it. They catch the common cases cheaply; they are not a data-loss
prevention product.

Every pattern runs in time linear in the text: each quantifier is bounded (an e-mail's local part
has at most 64 characters, as RFC 5321 says) and a look-behind lets a candidate start only where a
word or digit group starts, so no position is scanned from more than a bounded number of starts.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterator

__all__ = ["KINDS", "PLACEHOLDERS", "contains", "find", "iban_valid", "luhn_valid", "redact"]

KINDS = ("email", "phone", "card", "iban", "ssn", "ipv4")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]", "ssn": "[SSN]", "ipv4": "[IP]"}

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{{0,63}}@{_LABEL}(?:\.{_LABEL}){{0,8}}\.[A-Za-z]{{2,24}}(?![\w-])")
# A card: 13-19 digits, bare or in groups split by one kind of separator (4111 1111 1111 1111,
# 5500-0000-0000-0004, 4111.1111.1111.1111, 3782 822463 10005), not part of a longer digit run.
_CARD = re.compile(r"(?<![\w+])(?<!\d[ .-])\d(?:[ .-]?\d){12,18}(?!\w)(?![ .-]\d)")
_CARD_GROUPS = re.compile(r"\d{3,6}(?:([ .-])\d{3,6})(?:\1\d{3,6}){1,3}")
# An IBAN: country, check digits, then alphanumerics with optional single spaces (trimmed to the
# country's length by the validator, so a word after the IBAN is not taken in). Any case.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")
# A US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000.
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")

# Phones come in three shapes. Each must not touch another digit group (so no piece of a card, an
# IBAN or a list of numbers is taken for one), and a bare run of digits without `+` is never a phone.
_NOT_AFTER = r"(?<![\w+/:])(?<!\d[ .-])"
_NOT_BEFORE = r"(?![\w/:])(?![ .-]\d)"
_PHONE_SHAPES = (
    # international: +CC then groups split by spaces, dots, dashes or a (area) part; 9-15 digits
    (re.compile(r"(?<![\w+])\+(?:\d{8,15}|\d{1,4}(?:(?:[ .-]?\(\d{1,5}\)[ .-]?|[ .-])\d{1,6}){1,6})" + _NOT_BEFORE), 9, 15),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1 555 123 4567
    (re.compile(_NOT_AFTER + r"(?:1[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}" + _NOT_BEFORE), 10, 11),
    # national with a trunk 0, as in most of Europe: 020 7946 0958, (030) 1234567, 01 23 45 67 89;
    # at most 12 digits, since longer grouped runs are far more often card or account numbers
    (re.compile(_NOT_AFTER + r"(?:\(0[1-9]\d{0,3}\)|0[1-9]\d{0,3})(?:[ .-]\d{2,8}){1,4}" + _NOT_BEFORE), 9, 12),
)
_DIGIT = re.compile(r"\d")
_NON_DIGITS = re.compile(r"\D")

# ISO 13616 IBAN lengths by country (SWIFT IBAN registry). An upper-case candidate from a country
# missing here is still accepted when the whole candidate (15-34 characters) passes mod-97.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def find(text: str) -> list[tuple[str, int, int]]:
    """Every piece of PII in ``text`` as ``(kind, start, end)``, in text order, without overlaps:
    where two finds overlap the longer one wins (an e-mail address that holds a phone number is one
    e-mail address); of two equally long ones, the kind listed first in ``_DETECTORS``."""
    if "@" not in text and _DIGIT.search(text) is None:  # every kind needs a digit, except e-mail which needs @
        return []
    found = [(start - end, rank, start, end, kind) for rank, detect in enumerate(_DETECTORS) for kind, start, end in detect(text)]
    found.sort()
    starts: list[int] = []  # kept spans, sorted by start; they never overlap, so their ends are sorted too
    ends: list[int] = []
    kinds: dict[int, str] = {}
    for _, _, start, end, kind in found:
        i = bisect.bisect_right(starts, start)
        if (i > 0 and ends[i - 1] > start) or (i < len(starts) and starts[i] < end):
            continue
        starts.insert(i, start)
        ends.insert(i, end)
        kinds[start] = kind
    return [(kinds[s], s, e) for s, e in zip(starts, ends)]


def redact(text: str) -> str:
    """``text`` with each piece of PII replaced by its placeholder (``[EMAIL]``, ``[CARD]``, ...)."""
    spans = find(text)
    if not spans:
        return text
    parts, last = [], 0
    for kind, start, end in spans:
        parts += [text[last:start], PLACEHOLDERS[kind]]
        last = end
    parts.append(text[last:])
    return "".join(parts)


def contains(text: str) -> dict[str, int]:
    """How many pieces of PII of each kind ``text`` holds; kinds not found are left out (``{}``: none)."""
    return dict(Counter(kind for kind, _, _ in find(text)))


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod-10) check of a payment card number, given as digits only."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces and lower case allowed): move the first four
    characters to the end, turn letters into numbers (A=10 ... Z=35), and the number mod 97 must be 1."""
    compact = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    return int("".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])) % 97 == 1


# -- detectors: each yields (kind, start, end) ------------------------------------------------------

Find = Iterator[tuple[str, int, int]]


def _cards(text: str) -> Find:
    for m in _CARD.finditer(text):
        found = m.group()
        digits = _NON_DIGITS.sub("", found)
        grouped = found == digits or _CARD_GROUPS.fullmatch(found) is not None  # one kind of separator, between groups
        if grouped and luhn_valid(digits) and len(set(digits)) > 1:  # 0000 0000 0000 0000 passes Luhn but is no card
            yield "card", m.start(), m.end()


def _ibans(text: str) -> Find:
    for m in _IBAN.finditer(text):
        found = m.group()
        country = found[:2].upper()
        ends = [i + 1 for i, ch in enumerate(found) if ch != " "]  # ends[n - 1]: where n characters end
        expected = _IBAN_LENGTHS.get(country)
        if expected is None and not found[:2].isupper():
            continue  # lower case only for known countries: "ab12 ..." is far more often a word than an IBAN
        for n in [expected] if expected else range(len(ends), 14, -1):
            end = ends[n - 1] if n <= len(ends) else None
            if end and (end == len(found) or found[end] == " ") and _plausible_iban(found[:end]):
                yield "iban", m.start(), m.start() + end
                break


def _plausible_iban(candidate: str) -> bool:
    """mod-97, and for text not in upper case a mostly-digit account part, as every country's IBAN has
    (so that a lower-case phrase passing mod-97 by chance, one in 97, is not taken for one)."""
    if not candidate.isupper():
        account = candidate.replace(" ", "")[4:]
        if sum(ch.isdigit() for ch in account) * 2 < len(account):
            return False
    return iban_valid(candidate)


def _phones(text: str) -> Find:
    for pattern, least, most in _PHONE_SHAPES:
        for m in pattern.finditer(text):
            if least <= len(_NON_DIGITS.sub("", m.group())) <= most:
                yield "phone", m.start(), m.end()


def _simple(pattern: re.Pattern, kind: str):
    def detect(text: str) -> Find:
        return ((kind, m.start(), m.end()) for m in pattern.finditer(text))

    return detect


# In order of precedence when two finds of the same length overlap.
_DETECTORS = (_cards, _ibans, _simple(_SSN, "ssn"), _simple(_EMAIL, "email"), _phones, _simple(_IPV4, "ipv4"))
