"""Progress in a log file: lines with the rate and the time left, not a bar that prints nothing
until the step ends (issue: 20 silent minutes between the banner and the end of an epoch)."""

import io

from rich.console import Console
from rich.progress import Progress

from tunekit.progress import LineProgress, bar, clock


def test_a_log_gets_lines_with_rate_and_time_left_a_terminal_gets_a_bar():
    log = Console(file=io.StringIO(), width=200)  # a file: not a terminal
    with bar(log, every_s=0.0) as progress:
        assert isinstance(progress, LineProgress)
        task = progress.add_task("train", total=4, info="")
        for step in range(4):
            progress.update(task, advance=1, info=f"loss {1 / (step + 1):.2f}")
    lines = log.file.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("train: 4/4 steps (100%), ") and lines[-1].endswith("loss 0.25")
    assert "steps/s" in lines[0] and "left" in lines[0]
    assert isinstance(bar(Console(file=io.StringIO(), force_terminal=True)), Progress)


def test_lines_are_spaced_by_the_interval_and_the_end_is_always_printed():
    log = Console(file=io.StringIO(), width=200)
    with LineProgress(log, every_s=3600) as progress:
        task = progress.add_task("generate", total=100, info="")
        for _ in range(100):
            progress.update(task, advance=1)
    assert log.file.getvalue().count("generate: ") == 1  # only the final line within an hour
    assert clock(3725) == "1:02:05"
