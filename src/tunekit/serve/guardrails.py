"""Guardrails of the production server: what a request may bring in and what an answer may take out.

Each guardrail is ``off``, ``flag`` (the request goes through and the flag is returned and logged) or
``block`` (the server answers 400 ``guardrail_blocked``); PII in outputs may also be ``redact``ed.

    input   prompt_injection  rules (``INJECTION_RULES``) plus an optional tunekit classifier
            pii_input         e-mail, phone, payment card, IBAN, US SSN, IPv4 in the request
    output  banned_output     the configured regexes
            pii_output        the same PII detectors; ``redact`` replaces each find with ``[EMAIL]``, ...
            grounding         ``tunekit.evaluate.grounding.check_grounding`` when the request has context
    logs    redact_logs       ``for_log(text)`` is what the request log stores

The PII detectors are ``tunekit.pii``'s, the same the request log redacts with. Every detector is
lexical: a regex finds candidates and a validator (Luhn for cards, ISO 13616 mod-97 for IBANs, digit
counts for phones) drops the ones that cannot be real. They catch the common cases cheaply; they
are not a data-loss-prevention product, and the injection rules are a tripwire for known phrasings,
not a defence against a determined attacker. Every pattern runs in time linear in the text, and the
server runs the checks in a worker thread, so no text can stall the event loop.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunekit import pii
from tunekit.errors import ConfigError, GuardrailBlocked, ModelError, TunekitError
from tunekit.evaluate.grounding import check_grounding
from tunekit.pii import PLACEHOLDERS, iban_valid, luhn_valid, redact

__all__ = [
    "INJECTION_RULES", "PLACEHOLDERS", "Flag", "GuardrailBlocked", "Guardrails", "GuardrailsConfig", "InjectionRule", "Span",
    "detect_injection", "find_pii", "iban_valid", "luhn_valid", "redact",
]

Mode = Literal["off", "flag", "block"]


class GuardrailsConfig(BaseModel):
    """The ``guardrails`` section of the server settings. Every guardrail is ``off``, ``flag`` or ``block``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_injection: Mode = Field("flag", description="Prompt-injection detection on the request's texts: the built-in rules (ignore previous instructions, DAN, reveal your system prompt, role markers such as `<|im_start|>`, base64-encoded text, ...) and, if set, `injection_classifier`.")
    injection_classifier: str | None = Field(None, description="Path of a tunekit classification model directory whose labels include `injection`; loaded on the first request (on CPU) and used next to the rules. Default: rules only.")
    injection_threshold: float = Field(0.5, ge=0.0, le=1.0, description="The classifier flags a request when P(injection) of any of its texts is at least this.")
    pii_input: Mode = Field("flag", description="PII in the request (e-mail, phone, payment card passing the Luhn check, IBAN passing mod-97, US SSN, IPv4 address).")
    pii_output: Literal["off", "flag", "block", "redact"] = Field("redact", description="PII in the model's answer; `redact` returns the answer with each find replaced by `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`, `[SSN]` or `[IP]`.")
    redact_logs: bool = Field(True, description="Store texts in the request log with PII replaced as in `pii_output: redact`.")
    banned_output_patterns: list[str] = Field(default_factory=list, description="Regular expressions (Python syntax, case-sensitive unless they start with `(?i)`) that an answer must not match.")
    banned_output: Mode = Field("block", description="What to do when an answer matches one of `banned_output_patterns`.")
    grounding: Mode = Field("flag", description="When a request supplies context, check the answer against it: every quoted span must occur in the context and at least `grounding_min_support` of its content words must.")
    grounding_min_support: float = Field(0.5, ge=0.0, le=1.0, description="Least share of the answer's content words that must occur in the context.")

    @field_validator("banned_output_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        _compile_patterns(patterns)
        return patterns


def _compile_patterns(patterns: list[str]) -> list[re.Pattern]:
    """Compile every banned pattern; one ``ConfigError`` names each one that is not a valid regex."""
    compiled, problems = [], []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            problems.append(f"guardrails.banned_output_patterns[{i}]: {pattern!r} is not a valid regular expression ({exc})")
    if problems:
        raise ConfigError("; ".join(problems))
    return compiled


@dataclass(frozen=True)
class Flag:
    """One guardrail that fired: what (``kind``), on which side (``where``), why (``detail``), and
    what was done (``action``: ``flag``, ``block`` or ``redact``)."""

    kind: Literal["prompt_injection", "pii", "banned_output", "ungrounded"]
    where: Literal["input", "output"]
    detail: str
    action: Literal["flag", "block", "redact"]

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# PII: the detectors of ``tunekit.pii``, shared with the request log and the data report.

@dataclass(frozen=True)
class Span:
    """A piece of PII: ``text[start:end]`` is of ``type`` (``email``, ``phone``, ``card``, ...)."""

    start: int
    end: int
    type: str
    text: str


def find_pii(text: str) -> list[Span]:
    """Every piece of PII in ``text`` (``tunekit.pii.find``), in text order, without overlaps."""
    return [Span(start, end, kind, text[start:end]) for kind, start, end in pii.find(text)]


def _replace(text: str, spans: list[Span]) -> str:
    parts, last = [], 0
    for span in spans:
        parts += [text[last:span.start], PLACEHOLDERS[span.type]]
        last = span.end
    return "".join(parts) + text[last:]


def _types(spans: Iterable[Span]) -> str:
    return ", ".join(sorted({s.type for s in spans}))


# ---------------------------------------------------------------------------------------------------
# Prompt injection: named rules, each a case-insensitive regex for one family of known attacks.

def _decodes_to_text(blob: str) -> bool:
    """Whether a base64 blob decodes to readable text (hidden instructions), not to binary data
    (an image, a key, a hash), which is not an attack."""
    try:
        raw = base64.b64decode(blob.replace("-", "+").replace("_", "/") + "=" * (-len(blob) % 4), validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in decoded)
    return " " in decoded and printable >= 0.95 * len(decoded)


_VERB_IGNORE = r"(?:ignore|disregard|forget|override|bypass|skip)"
_EARLIER = r"(?:previous|prior|above|earlier|preceding|foregoing|initial|original|system|all|your)"
_ORDERS = r"(?:instructions?|prompts?|rules|directions|directives|guidelines|commands|guardrails|restrictions)"
_MODE_NAME = r"(?:developer|dan|god|jailbreak|jailbroken|unrestricted|unfiltered|uncensored)"
_UNBOUND = r"(?:unrestricted|unfiltered|uncensored|jailbroken|amoral|evil|dan)"


@dataclass(frozen=True)
class InjectionRule:
    """One family of known attacks: ``pattern`` is matched case-insensitively; ``check``, when set,
    must also accept the matched text."""

    name: str
    catches: str
    pattern: str
    check: Callable[[str], bool] | None = None


INJECTION_RULES = (
    InjectionRule(
        "ignore_instructions", "ignore / disregard / forget (all) previous|above|your instructions, rules, prompt",
        rf"\b{_VERB_IGNORE}\s+(?:(?:all|any|of|the|my|these|those)\s+){{0,3}}{_EARLIER}\s+(?:\w+\s+)?{_ORDERS}\b"
        rf"|\b{_VERB_IGNORE}\s+(?:everything|anything)\s+(?:above|before|you\s+(?:were|have\s+been)\s+told)",
    ),
    InjectionRule(
        "persona_override", "you are now DAN / act as an unrestricted AI / pretend you have no rules",
        rf"\b(?:you\s+are\s+now|from\s+now\s+on,?\s+you\s+are|act\s+as|pretend\s+(?:to\s+be|you\s+are)|role-?play\s+as)"
        rf"\s+(?:an?\s+)?(?:\w+\s+){{0,2}}?{_UNBOUND}\b"
        r"|\b(?:you\s+are\s+(?:now\s+)?|act\s+as\s+(?:an?\s+)?\w+\s+)(?:free\s+from|without|no\s+longer\s+bound\s+by)\s+(?:any\s+)?"
        r"(?:rules|restrictions|filters|limitations|guidelines|ethics)\b|\bdo\s+anything\s+now\b",
    ),
    InjectionRule(
        "developer_mode", "developer / DAN / god mode switched on for the assistant (not 'enable developer mode on my phone')",
        rf"\b{_MODE_NAME}\s+mode\s+(?:is\s+)?(?:now\s+)?(?:enabled|activated)\b|\byou\s+are\s+(?:now\s+)?in\s+{_MODE_NAME}\s+mode\b"
        rf"|\b(?:enter|enable|activate|switch\s+(?:in)?to)\s+{_MODE_NAME}\s+mode\s+now\b",
    ),
    InjectionRule(
        "reveal_system_prompt", "reveal / print / repeat your system prompt or initial instructions",
        r"\b(?:reveal|print|show|output|repeat|display|leak|dump|give\s+me|tell\s+me|what\s+(?:is|are|was|were))\s+"
        r"(?:me\s+)?(?:your|the)\s+(?:(?:full|entire|exact|original|initial|hidden|secret|complete)\s+)*"
        r"(?:system\s+(?:prompt|message|instructions?)|(?:initial|original|hidden|secret)\s+(?:prompt|instructions?)|pre-?prompt)"
        r"|\brepeat\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:words|text|everything)\s+above\b",
    ),
    InjectionRule(
        "role_marker", "chat-template control tokens that fake a new turn: </s>, <|im_start|>, [INST], <<SYS>> (also HTML's </s>)",
        r"</s>|<\|[a-z_]{2,30}\|>|\[/?inst\]|<</?sys>>",
    ),
    InjectionRule(
        "fake_system_block", "a pretended system or admin section: BEGIN SYSTEM PROMPT, [SYSTEM], new system instructions",
        r"\b(?:begin|start)\s+(?:of\s+)?(?:the\s+)?(?:system|admin|developer)\s+(?:prompt|message|instructions?)\b"
        r"|\bend\s+of\s+(?:the\s+)?(?:user\s+input|system\s+prompt)\b|\[(?:system|admin)\]"
        r"|\bnew\s+system\s+(?:prompt|instructions?)\b",
    ),
    InjectionRule(
        "encoded_payload", "a base64 blob of 40+ characters that decodes to text (instructions hidden from filters)",
        r"(?<![a-z0-9+/=_-])[a-z0-9+/_-]{40,}={0,2}(?![a-z0-9+/=_-])", _decodes_to_text,
    ),
)
_INJECTION = [(rule.name, re.compile(rule.pattern, re.IGNORECASE), rule.check) for rule in INJECTION_RULES]


def detect_injection(text: str) -> list[str]:
    """Names of the ``INJECTION_RULES`` that ``text`` matches, in rule order."""
    return [name for name, pattern, check in _INJECTION
            if any(check is None or check(m.group()) for m in pattern.finditer(text))]


# ---------------------------------------------------------------------------------------------------
# The guardrails a server runs, and the error it raises when one blocks.

_CONFIG_KEY = {  # (kind, where) -> the setting that controls it, and what else it may be set to
    ("prompt_injection", "input"): ("prompt_injection", "flag or off"),
    ("pii", "input"): ("pii_input", "flag or off"),
    ("pii", "output"): ("pii_output", "redact, flag or off"),
    ("banned_output", "output"): ("banned_output", "flag or off"),
    ("ungrounded", "output"): ("grounding", "flag or off"),
}


def blocked_error(flag: Flag) -> GuardrailBlocked:
    """The error for a guardrail set to ``block`` that fired, naming the setting that lets such text through."""
    key, other = _CONFIG_KEY[(flag.kind, flag.where)]
    side = "request" if flag.where == "input" else "answer"
    return GuardrailBlocked(f"the {side} was blocked by the `{key}` guardrail ({flag.kind}: {flag.detail}); "
                            f"to let such {side}s through, set guardrails.{key} to {other} in the server config", flag)


Classifier = Any  # anything with ``labels: list[str]`` and ``predict_proba(texts) -> array (n, n_labels)``


def _load_classifier(path: str) -> Classifier:
    # torch and transformers only when a classifier is configured
    from tunekit.models import load_trained

    return load_trained(path, "cpu")


class Guardrails:
    """The configured guardrails. ``load_classifier`` (a path -> classifier function) is a seam for tests."""

    def __init__(self, config: GuardrailsConfig, load_classifier: Callable[[str], Classifier] = _load_classifier):
        self.config = config
        self._banned = _compile_patterns(config.banned_output_patterns)
        self._load_classifier = load_classifier
        self._classifier: Classifier | None = None
        self._lock = threading.Lock()  # one load, then one forward pass at a time

    def check_input(self, texts: list[str]) -> list[Flag]:
        """Flags for the request's texts: prompt injection, then PII."""
        cfg, flags = self.config, []
        if cfg.prompt_injection != "off":
            reasons = []
            rules = list(dict.fromkeys(rule for text in texts for rule in detect_injection(text)))
            if rules:
                reasons.append("rules: " + ", ".join(rules))
            if cfg.injection_classifier and texts:
                p = self._injection_probability(texts)
                if p >= cfg.injection_threshold:
                    reasons.append(f"classifier: P(injection)={p:.2f}")
            if reasons:
                flags.append(Flag("prompt_injection", "input", "; ".join(reasons), cfg.prompt_injection))
        if cfg.pii_input != "off":
            types = _types(span for text in texts for span in find_pii(text))
            if types:
                flags.append(Flag("pii", "input", types, cfg.pii_input))
        return flags

    def check_output(self, text: str, context: str | None = None) -> tuple[str, list[Flag]]:
        """The answer to return (redacted when ``pii_output: redact``) and its flags: banned patterns,
        PII, then grounding (only when ``context`` is given and not blank). Every check reads the
        answer as the model wrote it."""
        cfg, flags, out = self.config, [], text
        if cfg.banned_output != "off":
            hits = [p.pattern for p in self._banned if p.search(text)]
            if hits:
                flags.append(Flag("banned_output", "output", "patterns: " + ", ".join(hits), cfg.banned_output))
        if cfg.pii_output != "off":
            spans = find_pii(text)
            if spans:
                flags.append(Flag("pii", "output", _types(spans), cfg.pii_output))
                out = _replace(text, spans) if cfg.pii_output == "redact" else text
        if cfg.grounding != "off" and context and context.strip():
            result = check_grounding(text, context, cfg.grounding_min_support)
            if not result["grounded"]:
                flags.append(Flag("ungrounded", "output", _grounding_detail(result, cfg.grounding_min_support), cfg.grounding))
        return out, flags

    @staticmethod
    def blocked(flags: list[Flag]) -> Flag | None:
        """The first flag whose action is ``block``, or None."""
        return next((f for f in flags if f.action == "block"), None)

    def for_log(self, text: str) -> str:
        """``text`` as the request log should store it: redacted when ``redact_logs``."""
        return redact(text) if self.config.redact_logs else text

    def _injection_probability(self, texts: list[str]) -> float:
        """The highest P(injection) over ``texts``; loads the classifier on first use."""
        with self._lock:
            if self._classifier is None:
                self._classifier = self._checked_classifier(self.config.injection_classifier)
            probs = self._classifier.predict_proba(texts)
            return float(max(row[self._classifier.labels.index("injection")] for row in probs))

    def _checked_classifier(self, path: str) -> Classifier:
        try:
            classifier = self._load_classifier(path)
        except TunekitError as exc:
            raise ModelError(f"guardrails.injection_classifier: {exc}") from exc
        if "injection" not in classifier.labels:
            raise ConfigError(f"guardrails.injection_classifier: the model at {path} has labels {classifier.labels}, "
                              "none of them `injection`; train it with a label named `injection`")
        return classifier


def _grounding_detail(result: dict, min_support: float) -> str:
    missing = [q["text"] for q in result["quotes"] if not q["found"]]
    if missing:
        return "quote not in the context: " + "; ".join(f'"{q}"' for q in missing)
    unsupported = ", ".join(result["unsupported_words"])
    return f"support {result['support']:.2f} below {min_support} (words not in the context: {unsupported})"
