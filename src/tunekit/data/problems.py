"""Collect several data problems and raise them as one ``DataError``.

A user fixing a data file wants to see the first handful of bad rows at once, not one per run;
but a file with 100 000 bad rows should not produce a 100 000-line message. So problems are
collected up to ``MAX_SHOWN`` and the rest are only counted.
"""

from __future__ import annotations

from tunekit.errors import DataError

MAX_SHOWN = 10


class Problems:
    """An accumulator of problem lines; ``raise_if_any`` turns them into one ``DataError``."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.shown) < MAX_SHOWN:
            self.shown.append(message)

    def __bool__(self) -> bool:
        return self.total > 0

    def raise_if_any(self, subject: str) -> None:
        """Raise ``DataError`` listing the problems found in ``subject`` (usually a file)."""
        if not self.total:
            return
        if self.total == 1:
            raise DataError(self.shown[0])
        lines = [f"{subject}: {self.total} problems in the data:"]
        lines += [f"  {msg}" for msg in self.shown]
        if self.total > len(self.shown):
            lines.append(f"  ... and {self.total - len(self.shown)} more")
        raise DataError("\n".join(lines))
