"""``Prepared``: what every task's frozen data offers the stages that do not ask which task it is.

``data.prepare`` returns ``PreparedData`` (classification, regression: Arrow datasets of
``{id, text, text_pair?, label}``) and ``data.conversations.prepare_conversations`` returns
``PreparedConversations`` (generation: rows of ``{id, messages}`` and their token encodings). Training,
the registry entry and the pipeline need only the members below, so they are typed with this
protocol instead of either class; what a task's own functions need beyond it, they take from
their own class. ``tests/test_tasks.py`` checks both classes satisfy it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Prepared"]


@runtime_checkable
class Prepared(Protocol):
    """Frozen splits with their fingerprints, the data report and where they are stored."""

    @property
    def train(self) -> Sequence: ...           # the training rows, in the task's canonical form

    @property
    def validation(self) -> Sequence: ...      # rows for early stopping and calibration

    @property
    def test(self) -> Sequence: ...            # rows every model and baseline is scored on

    labels: list[str]          # label names in output order; empty for regression and generation
    fingerprint: str           # sha256 over the canonical rows of every split: the dataset version
    test_fingerprint: str      # the test split's alone (comparisons need the same one)
    directory: Path            # the frozen folder in the workspace (splits, data report)
    report: dict               # the data report (counts, lengths, problems, warnings)
    reused: bool               # the splits were already frozen and were read back, not made now
