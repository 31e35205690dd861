"""Progress on long steps, in a terminal and in a log file alike.

rich's progress bar redraws one line in place; written to a file or a pipe (a job log, ``nohup``,
CI) it prints nothing until the step ends, so a 20-minute epoch looked like a hang. ``bar`` returns
rich's bar on a terminal and, elsewhere, ``LineProgress``: the same ``add_task``/``update`` calls,
printed as plain lines with the rate and the time remaining, every ``every_s`` seconds and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["LineProgress", "bar", "clock", "emit", "listen"]

Listener = Callable[..., None]
_LISTENERS: ContextVar[tuple[Listener, ...]] = ContextVar("tunekit_progress_listeners", default=())


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Call ``listener(event, **fields)`` for every ``emit`` in this thread (context) until the block ends.

    Why: a fine-tuning job (``tunekit.service``) turns the training loop's steps and epochs into
    OpenAI's job events and metrics, and stops a cancelled job between two steps by raising from the
    listener; the loop knows nothing of jobs, it only says what happened.
    """
    token = _LISTENERS.set((*_LISTENERS.get(), listener))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def emit(event: str, **fields) -> None:
    """Tell the listeners (if any) that ``event`` happened: ``step`` (``step``, ``total_steps``,
    ``train_loss``, ``epoch``) after each optimisation step, ``epoch`` (the epoch's history row) after
    each validation. An exception a listener raises propagates: that is how a job is cancelled."""
    for listener in _LISTENERS.get():
        listener(event, **fields)


def bar(console: Console | None, unit: str = "steps", every_s: float = 30.0):
    """A progress display for ``console`` (None: rich's default console): rich's bar on a terminal,
    ``LineProgress`` otherwise. Tasks take an ``info`` field (free text after the figures, e.g. the running loss)."""
    console = console or Console()
    if console.is_terminal or console.quiet:
        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)
    return LineProgress(console, unit, every_s)


@dataclass
class _Task:
    description: str
    total: float
    completed: float
    info: str
    started: float = field(default_factory=time.monotonic)
    done_at_start: float = 0.0
    printed: float = field(default_factory=time.monotonic)


class LineProgress:
    """Plain progress lines for logs: ``train: 120/500 steps (24%), 3.21 steps/s, 0:00:37 elapsed,
    about 0:01:58 left, epoch 1/3 loss 0.5123``. The rate counts only the work done in this process,
    so a resumed run's estimate is not flattered by steps finished before the crash."""

    def __init__(self, console: Console, unit: str = "steps", every_s: float = 30.0):
        self.console, self.unit, self.every_s = console, unit, every_s
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        for task_id, task in self.tasks.items():
            if task.printed != -1.0:
                self._print(task_id)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, info: str = "", **_) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = _Task(description, float(total or 0), float(completed), info, done_at_start=float(completed))
        return task_id

    def update(self, task_id: int, advance: float = 0, info: str | None = None, completed: float | None = None, **_) -> None:
        task = self.tasks[task_id]
        task.completed = completed if completed is not None else task.completed + advance
        if info is not None:
            task.info = info
        emit("progress", description=task.description, completed=task.completed, total=task.total)
        now = time.monotonic()
        if task.total and task.completed >= task.total:
            self._print(task_id)
            task.printed = -1.0  # finished: printed once, not again on exit
        elif now - task.printed >= self.every_s:
            self._print(task_id)
            task.printed = now

    def line(self, task_id: int) -> str:
        t = self.tasks[task_id]
        elapsed = time.monotonic() - t.started
        rate = (t.completed - t.done_at_start) / elapsed if elapsed > 0 else 0.0
        parts = [f"{t.description}: {t.completed:g}/{t.total:g} {self.unit}" + (f" ({t.completed / t.total:.0%})" if t.total else "")]
        parts.append(f"{rate:.2f} {self.unit}/s, {clock(elapsed)} elapsed")
        if rate > 0 and t.total:
            parts[-1] += f", about {clock((t.total - t.completed) / rate)} left"
        if t.info:
            parts.append(t.info)
        return ", ".join(parts)

    def _print(self, task_id: int) -> None:
        self.console.print(self.line(task_id), markup=False, highlight=False)


def clock(seconds: float) -> str:
    """``H:MM:SS`` for a number of seconds."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
