"""Live accuracy per slice of traffic, by a metadata field of the request (channel, locale, tier).

A model can be fine on average and fail one group of users; the average hides it. Requests carry
``metadata`` (``POST /v1/classify``'s ``metadata`` object, kept in the request log); feedback-
labelled requests are grouped by the value of one field, and each group's accuracy (Wilson
interval) is set against the accuracy of all the *other* labelled requests pooled. A slice whose
accuracy is below the others' by more than ``slice_margin``, with at least ``min_slice_feedback``
labelled requests on both sides, is an alert. Requests without the field form the slice ``(none)``.
"""

from __future__ import annotations

from collections import defaultdict

from tunekit.monitor.stats import wilson

MISSING = "(none)"


def live_slices(given: list, answered: list, metadata: list[dict], field: str, margin: float, min_n: int) -> dict:
    """Per-slice accuracy of ``answered`` against ``given`` grouped by ``metadata[i][field]``, with alerts."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # value -> [correct, n]
    for y, p, meta in zip(given, answered, metadata):
        value = str((meta or {}).get(field, MISSING))
        groups[value][0] += int(y == p)
        groups[value][1] += 1
    total_correct, total = sum(c for c, _ in groups.values()), sum(n for _, n in groups.values())
    slices, alerts = [], []
    for value, (correct, n) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        low, high = wilson(correct, n)
        others_n = total - n
        others = (total_correct - correct) / others_n if others_n else None
        gap = None if others is None else others - correct / n
        alert = gap is not None and n >= min_n and others_n >= min_n and gap > margin
        entry = {"value": value, "n": n, "correct": correct, "accuracy": correct / n, "accuracy_low": low, "accuracy_high": high,
                 "others_n": others_n, "others_accuracy": others, "gap": gap, "alert": alert}
        slices.append(entry)
        if alert:
            alerts.append(f"slice {field}={value}: live accuracy {correct / n:.3f} (95% interval {low:.3f}-{high:.3f}) on {n} labelled "
                          f"requests is {gap:.3f} below the other slices' {others:.3f} ({others_n} requests), more than slice_margin {margin:g}")
    return {"field": field, "margin": margin, "min_n": min_n, "slices": slices, "alerts": alerts}
