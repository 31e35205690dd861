"""The live decision between champion and challenger: a pure function of two arms' counts.

Offline, the gate (``registry.gate``) promotes on test-set evidence. Live, each arm has ``n``
labelled requests (feedback that names the right answer) of which ``correct`` were answered right.
``decide`` turns the two into one of three verdicts, each with its reasons in words:

- ``promote``: the challenger's accuracy beats the champion's by the gate's margin
  (``gate.min_improvement``) and the whole confidence interval of the difference clears it, so
  the lead is not a lucky streak;
- ``rollback``: the interval lies wholly below zero: the challenger is worse, stop its traffic;
- ``need_more_data``: neither is clear yet; ``more_per_arm`` says how many more labelled requests
  each arm needs (a power estimate, below).

The interval of the difference is Newcombe's hybrid score interval (method 10 of Newcombe 1998),
built from the two arms' Wilson intervals (scipy's, as live accuracy uses): it keeps its coverage
near 0 and 1 and with few rows, where the plain Wald interval of a difference is too narrow.

The power estimate is the textbook sample size of a one-sided two-proportion z-test
(Fleiss, Levin & Paik, eq. 4.14, without continuity correction): the rows per arm for which a
true difference ``d`` above the margin is declared with probability ``power`` at level
``alpha = (1 - confidence) / 2``:

    n = (z_alpha * sqrt(2 p (1 - p)) + z_power * sqrt(p1 (1 - p1) + p2 (1 - p2)))^2 / (d - margin)^2

with ``p1``, ``p2`` the arms' observed accuracies and ``p`` their mean. ``d`` is the observed
difference when it exceeds the margin; otherwise the observed lead cannot reach promotion and the
estimate is for rollback (``d`` the observed deficit, against 0) when the challenger trails, or for
a lead of ``margin + planning_effect`` when it sits between 0 and the margin (the smallest gain
worth waiting for, a setting). It is an estimate at the observed rates, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from scipy import stats as sps

from tunekit.monitor.stats import wilson

PROMOTE, ROLLBACK, NEED_MORE = "promote", "rollback", "need_more_data"


@dataclass(frozen=True)
class Arm:
    """One arm's live evidence: ``n`` feedback-labelled requests, ``correct`` of them answered right."""

    name: str          # "champion" or "challenger"
    version: str | None
    n: int
    correct: int

    def __post_init__(self) -> None:
        if self.n < 0 or not 0 <= self.correct <= self.n:
            raise ValueError(f"arm {self.name}: need 0 <= correct <= n, got correct={self.correct}, n={self.n}")

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None


@dataclass
class LiveDecision:
    """What ``decide`` concluded, and why (``reasons`` are sentences, the audit trail's text)."""

    action: str                      # PROMOTE, ROLLBACK or NEED_MORE
    champion: Arm
    challenger: Arm
    margin: float
    confidence: float
    difference: float | None         # challenger accuracy minus champion accuracy
    low: float | None                # its confidence interval
    high: float | None
    more_per_arm: int | None = None  # NEED_MORE: further labelled requests per arm (None: no estimate possible)
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"live decision {self.action}: " + "; ".join(self.reasons)

    def to_json(self) -> dict:
        return asdict(self) | {"summary": self.summary()}


def difference_interval(champion: Arm, challenger: Arm, confidence: float = 0.95) -> tuple[float, float, float]:
    """(challenger - champion accuracy, low, high): Newcombe's hybrid Wilson interval of the difference."""
    p1, p2 = champion.correct / champion.n, challenger.correct / challenger.n
    l1, u1 = wilson(champion.correct, champion.n, confidence)
    l2, u2 = wilson(challenger.correct, challenger.n, confidence)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, max(low, -1.0), min(high, 1.0)


def sample_size(p1: float, p2: float, effect: float, confidence: float = 0.95, power: float = 0.8) -> int:
    """Rows per arm for a one-sided two-proportion z-test at ``alpha = (1 - confidence) / 2`` to detect
    ``effect`` (> 0) with probability ``power``, at the arms' rates ``p1`` and ``p2`` (module docstring)."""
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    z_a, z_b = sps.norm.ppf(1 - (1 - confidence) / 2), sps.norm.ppf(power)
    p = (p1 + p2) / 2
    spread = z_a * math.sqrt(2 * p * (1 - p)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    # rates of exactly 0 or 1 have no variance; a floor keeps the estimate finite and honest (a few rows)
    spread = max(spread, z_a * math.sqrt(2 * 0.01 * 0.99))
    return math.ceil((spread / effect) ** 2)


def decide(champion: Arm, challenger: Arm, margin: float = 0.0, *, confidence: float = 0.95, power: float = 0.8,
           min_per_arm: int = 20, planning_effect: float = 0.05) -> LiveDecision:
    """The live verdict on ``challenger`` against ``champion`` (see the module docstring).

    ``margin``: the gate's ``min_improvement`` (absolute accuracy); ``min_per_arm``: no verdict on
    fewer labelled requests in either arm, whatever the interval says."""
    if not 0 < confidence < 1 or not 0 < power < 1:
        raise ValueError(f"confidence and power must lie between 0 and 1, got {confidence} and {power}")
    decision = LiveDecision(NEED_MORE, champion, challenger, margin, confidence, None, None, None)
    if champion.n == 0 or challenger.n == 0:
        empty = " and ".join(a.name for a in (champion, challenger) if a.n == 0)
        decision.reasons.append(f"no feedback-labelled requests yet for the {empty}; at least {min_per_arm} per arm are needed")
        decision.more_per_arm = max(min_per_arm - min(champion.n, challenger.n), 0) or None
        return decision
    d, low, high = difference_interval(champion, challenger, confidence)
    decision.difference, decision.low, decision.high = d, low, high
    pct = f"{confidence:.0%}"
    decision.reasons.append(f"challenger v{challenger.version} accuracy {challenger.accuracy:.3f} on {challenger.n} labelled requests, "
                            f"champion v{champion.version} {champion.accuracy:.3f} on {champion.n}: difference {d:+.3f} "
                            f"({pct} interval {low:+.3f} to {high:+.3f}), required margin {margin:+.3f}")
    few = min(champion.n, challenger.n) < min_per_arm
    if not few and low > margin and (low > 0 or margin < 0):
        decision.action = PROMOTE
        decision.reasons.append(f"the whole interval clears the margin: promote v{challenger.version}")
        return decision
    if not few and high < 0:
        decision.action = ROLLBACK
        decision.reasons.append(f"the whole interval is below zero: v{challenger.version} is worse than the champion; roll it back")
        return decision
    p1, p2 = champion.accuracy, challenger.accuracy
    if d > margin:
        effect, goal = d - margin, "to show this lead clears the margin"
    elif d < 0:
        effect, goal = -d, "to show the challenger is worse"
    else:
        effect, goal = planning_effect, f"to show a lead of {margin + planning_effect:+.3f} (margin + planning_effect), were it true"
        p2 = min(p1 + margin + planning_effect, 1.0)
    needed = sample_size(p1, p2, effect, confidence, power)
    decision.more_per_arm = max(needed - min(champion.n, challenger.n), min_per_arm - min(champion.n, challenger.n), 1)
    if few:
        decision.reasons.append(f"fewer than {min_per_arm} labelled requests in an arm: no verdict yet")
    else:
        decision.reasons.append("the interval neither clears the margin nor lies below zero")
    decision.reasons.append(f"about {decision.more_per_arm} more labelled requests per arm {goal} at {power:.0%} power "
                            f"(one-sided two-proportion z-test at the observed rates)")
    return decision
