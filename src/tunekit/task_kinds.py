"""What each task is, as facts the stages ask instead of comparing the task's name.

``kind(cfg.task).causal`` (a causal LM that writes text), ``.numeric`` (one number per row),
``.labelled`` (labels) and ``.paired`` (preference pairs, a causal task scored by pair) are what
stages branch on. This module imports nothing of tunekit, so every
stage can ask it; the table of stage functions per task is ``tasks.py``, which sits above the
stages and names the same tasks (``tests/test_tasks.py`` ties both to the config's ``task``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "Kind", "kind"]


@dataclass(frozen=True)
class Kind:
    name: str
    causal: bool   # the model is a causal LM that writes text; False: an encoder with a head
    numeric: bool  # the target is one number per row (a regression head); False: labels or text
    paired: bool = False  # rows are preference pairs (a prompt, a preferred and a non-preferred answer): scored by pair, not by text

    @property
    def labelled(self) -> bool:
        """The model picks labels (a classifier): neither text nor a number."""
        return not self.causal and not self.numeric


KINDS: dict[str, Kind] = {
    "classification": Kind("classification", causal=False, numeric=False),
    "regression": Kind("regression", causal=False, numeric=True),
    "generation": Kind("generation", causal=True, numeric=False),
    "preference": Kind("preference", causal=True, numeric=False, paired=True),
}


def kind(name: str) -> Kind:
    """The facts of task ``name``; an unknown name lists the tasks there are."""
    if name not in KINDS:
        from tunekit.errors import ConfigError  # errors imports nothing of tunekit either

        raise ConfigError(f"task: {name!r} is not a task tunekit knows; use one of {', '.join(KINDS)}")
    return KINDS[name]
