"""The promotion gate: a pure decision, so it is easy to test and to explain.

A new version becomes ``champion`` only when its primary metric beats the baseline's by
``gate.min_improvement`` and is not worse than the current champion's on the same test rows. Every
check contributes a sentence to ``reasons``, passed or not, so the user reads *why*.

"Beats" and "worse" follow the metric's direction. For scores (accuracy, F1, R², ROUGE, ...)
higher is better and the improvement is ``candidate - baseline``; for the error metrics of
regression (``rmse``, ``mae``, ``mse``) lower is better and the improvement is
``baseline - candidate``, so ``min_improvement`` is always "how much better", never negative for a gain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunekit.config import lower_is_better


@dataclass
class ChampionScore:
    """The current champion's primary metric on the candidate's test rows."""

    version: str
    score: float
    how: str  # "recorded" (same test rows) or "re-evaluated" (scored now on these rows)


@dataclass
class GateDecision:
    passed: bool
    primary: str
    candidate: float
    baseline: float
    champion: ChampionScore | None
    reasons: list[str] = field(default_factory=list)
    waits_live: bool = False  # passed, but gate.live holds it as challenger until the live decision

    @property
    def alias(self) -> str:
        return "champion" if self.passed and not self.waits_live else "challenger"

    def summary(self) -> str:
        verdict = ("passed, challenger until the live decision" if self.waits_live else "promoted to champion") if self.passed else "kept as challenger"
        return f"{verdict}: " + "; ".join(self.reasons)


def decide(primary: str, candidate: float, baseline: float, min_improvement: float,
           champion: ChampionScore | None, beat_champion: bool = True, suite: dict | None = None,
           tasks: dict | None = None, graders: list[dict] | None = None) -> GateDecision:
    """``suite``: the result of the behavioural suite when the gate requires it to pass. ``tasks``
    (multi-task models): each task's primary metric against the baseline on its own rows (``a``
    baseline, ``b`` model); every task must clear ``min_improvement``, so a headline averaged over
    tasks cannot hide one that got worse. ``graders`` (``gate.graders``): each grader's pass rates
    (``models``: ``fine_tuned`` and each baseline, with ``passed``, ``total``, ``rate``) and its
    ``min_pass_rate``, which the fine-tuned model's rate must reach."""
    reasons, passed = [], True
    lower = lower_is_better(primary)
    margin = baseline - candidate if lower else candidate - baseline  # the improvement, > 0 when the candidate is better
    note = "lower is better; " if lower else ""
    if _beats(margin, min_improvement):
        reasons.append(f"{primary} {candidate:.4f} beats the baseline's {baseline:.4f} by {margin:+.4f} ({note}required {min_improvement:+.4f})")
    else:
        passed = False
        reasons.append(f"{primary} {candidate:.4f} does not beat the baseline's {baseline:.4f} by the required {min_improvement:+.4f} "
                       f"({note}margin {margin:+.4f}" + ("; a tie is not a gain: at min_improvement 0 the model must be strictly better, "
                                                        "a negative min_improvement such as -0.001 accepts ties" if margin == 0 == min_improvement else "") + ")")
    worse, not_worse = ("above", "not above") if lower else ("below", "not below")
    if champion is None:
        reasons.append("there is no current champion")
    elif not beat_champion:
        reasons.append(f"champion v{champion.version} not compared (gate.beat_champion is false)")
    elif (candidate <= champion.score) if lower else (candidate >= champion.score):
        reasons.append(f"{primary} is {not_worse} champion v{champion.version}'s {champion.score:.4f} ({note}{champion.how} on the same test rows)")
    else:
        passed = False
        reasons.append(f"{primary} is {worse} champion v{champion.version}'s {champion.score:.4f} ({note}{champion.how} on the same test rows)")
    if suite is not None:
        if suite["failed"]:
            passed = False
            reasons.append(f"{suite['failed']} of {suite['passed'] + suite['failed']} behavioural test cases fail")
        else:
            reasons.append(f"all {suite['passed']} behavioural test cases pass")
    if tasks:
        behind = {t: r for t, r in tasks.items() if not _beats(r["b"] - r["a"], min_improvement)}
        if behind:
            passed = False
            reasons += [f"task {t}: {primary} {r['b']:.4f} does not beat its baseline's {r['a']:.4f} by the required {min_improvement:+.4f}"
                        for t, r in behind.items()]
        else:
            reasons.append(f"each of the {len(tasks)} tasks beats its baseline ({primary})")
    for g in graders or []:
        ok, reason = grader_reason(g)
        passed = passed and ok
        reasons.append(reason)
    return GateDecision(passed, primary, candidate, baseline, champion, reasons)


def grader_reason(g: dict) -> tuple[bool, str]:
    """Whether the fine-tuned model's pass rate of one grader reaches its ``min_pass_rate``, and the sentence that says so."""
    models = dict(g["models"])
    mine = models.pop("fine_tuned", {"passed": 0, "total": 0, "rate": 0.0})
    ok = mine["total"] > 0 and mine["rate"] >= g["min_pass_rate"]
    others = ", ".join(f"{name} {m['rate']:.3f}" for name, m in models.items())
    verb = "reaches" if ok else "is below" if mine["total"] else "cannot reach (no test answers to grade)"
    return ok, (f"grader {g['name']}: pass rate {mine['rate']:.3f} ({mine['passed']} of {mine['total']} test answers) {verb} the required "
                f"{g['min_pass_rate']:.3f}" + (f" (baseline: {others})" if others else ""))


def _beats(margin: float, min_improvement: float) -> bool:
    """Whether an improvement of ``margin`` clears ``min_improvement``: strictly better at the
    default 0; a negative ``min_improvement`` knowingly accepts a small loss."""
    return margin >= min_improvement and (margin > 0 or min_improvement < 0)
