"""The task table and the config agree, and no stage outside the table asks for a task by name."""

import re
from pathlib import Path

import pytest

from tunekit import task_kinds, tasks
from tunekit.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "tunekit"


def test_every_task_the_config_accepts_has_a_row_and_no_more():
    assert set(tasks.TASKS) == set(task_kinds.KINDS) == tasks.config_tasks()
    assert all(row.name == name == task_kinds.KINDS[name].name for name, row in tasks.TASKS.items())


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(ConfigError, match="use one of classification, regression, generation, preference"):
        tasks.get("ranking")


def test_the_pipeline_never_branches_on_the_task():
    """``pipeline.run`` is one recipe: no ``if`` on the task, no comparison of its name."""
    source = (SRC / "pipeline" / "__init__.py").read_text()
    assert not re.search(r"""\.task\s*[!=]=|==\s*["'](classification|regression|generation)["']""", source)
    assert not re.search(r"\bif\b[^\n]*\b(task|regression|generation)\b", source)


def test_no_stage_compares_the_task_by_name():
    """Code that needs to know what the task is asks its kind (``causal``, ``numeric``, ``labelled``);
    only the two tables and the config spell the names."""
    pattern = re.compile(r"""task["')\]]*\s*[!=]=\s*["'](classification|regression|generation)["']|["'](classification|regression|generation)["']\s*[!=]=""")
    offenders = [f"{path.relative_to(SRC)}:{n}" for path in sorted(SRC.rglob("*.py")) if path.name not in {"tasks.py", "task_kinds.py", "config.py"}
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_every_task_has_a_training_objective():
    """Training's own row per task (``train.objective_for``) covers exactly the config's tasks."""
    from tunekit import train
    from tunekit.train import loop

    for name in tasks.config_tasks():
        objective = train.objective_for(name)
        assert all(callable(getattr(objective, member, None)) for member in ("setup", "count", "loss", "validate", "save")), name
        set_in_init = {"model", "device", "lengths", "fingerprint", "lower_is_better", "improvement"}
        assert set(loop.Objective.__annotations__) <= set(dir(objective)) | set_in_init, name
    with pytest.raises(KeyError):
        train.objective_for("ranking")


def test_both_kinds_of_prepared_data_satisfy_the_protocol(tiny_config):
    """``data.Prepared`` is what training and the pipeline read; both tasks' classes provide it."""
    from tunekit import data
    from tunekit.config import load_config
    from tunekit.data.conversations import PreparedConversations

    assert isinstance(data.prepare(load_config(tiny_config())), data.Prepared)
    members = {"train", "validation", "test", "labels", "fingerprint", "test_fingerprint", "directory", "report", "reused"}
    assert members <= set(dir(PreparedConversations)) | set(PreparedConversations.__dataclass_fields__)
