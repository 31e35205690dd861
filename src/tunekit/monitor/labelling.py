"""``tunekit label``: the annotation queue in the terminal, one row at a time, keys for speed.

Each row shows the text, what the model answered (and the challenger, if it differed) and why the
row was picked. Keys (each followed by Enter, so it works over ssh and from a pipe):

- ``Enter``: the model's answer is right; ``c``: the challenger's answer is right;
- a number: the label of that number in the list (``?`` prints the list);
- the start of a label's name: that label, when only one label starts so;
- ``s``: skip this row; ``b``: back to the previous row (its label is replaced when given again);
- ``q``: stop (labels given so far are kept; the next session resumes at the first unlabelled row).

Every label is stored at once as feedback on the logged request (``save``), with the key id
``ANNOTATION_KEY``, so ``tunekit retrain --from-feedback`` turns the labels into a dataset version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tunekit.monitor.annotation import QueueItem

HELP = "Enter = model's answer, c = challenger's, NUMBER or label name = that label, ? = labels, s = skip, b = back, q = quit"


@dataclass
class Session:
    labelled: int = 0
    skipped: int = 0
    stopped: bool = False


def run(items: list[QueueItem], labels: list[str], ask: Callable[[str], str], say: Callable[[str], None],
        save: Callable[[QueueItem, str], None], done: set[tuple[str, int]] | None = None) -> Session:
    """Go through ``items`` not in ``done`` (``(request_id, input_index)`` already labelled)."""
    session, todo = Session(), [i for i in items if (i.request_id, i.input_index) not in (done or set())]
    say(f"{len(todo)} rows to label ({len(items) - len(todo)} already done). {HELP}")
    position = 0
    while position < len(todo):
        item = todo[position]
        say(f"\n[{position + 1}/{len(todo)}] {item.text}")
        why = f"uncertainty {item.uncertainty:.2f}, novelty {item.novelty:.2f}" + (", champion and challenger disagree" if item.disagreement else "")
        say(f"  model: {item.predicted}" + (f"   challenger: {item.challenger}" if item.challenger and item.challenger != item.predicted else "") + f"   ({why})")
        try:
            key = ask("label> ").strip()
        except EOFError:
            key = "q"
        if key == "q":
            session.stopped = True
            break
        if key == "?":
            say("  " + "  ".join(f"{n}={label}" for n, label in enumerate(labels, 1)))
            continue
        if key == "s":
            session.skipped += 1
            position += 1
            continue
        if key == "b":
            position = max(position - 1, 0)
            continue
        label, problem = choose(key, item, labels)
        if label is None:
            say(f"  {problem}")
            continue
        save(item, label)
        session.labelled += 1
        say(f"  -> {label}")
        position += 1
    return session


def choose(key: str, item: QueueItem, labels: list[str]) -> tuple[str | None, str]:
    """The label a key means, or (None, why not)."""
    if key == "":
        return item.predicted, ""
    if key == "c":
        return (item.challenger, "") if item.challenger else (None, "no challenger answer for this row")
    if key.isdigit():
        n = int(key)
        return (labels[n - 1], "") if 1 <= n <= len(labels) else (None, f"no label number {n}: 1 to {len(labels)} (? lists them)")
    if key in labels:
        return key, ""
    matches = [label for label in labels if label.lower().startswith(key.lower())]
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"{key!r} starts {len(matches)} labels: {', '.join(matches[:8])}; type more of it"
    return None, f"no label starts with {key!r}; ? lists them. {HELP}"
