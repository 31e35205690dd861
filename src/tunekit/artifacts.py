"""Provenance recorded with every model (git commit of the user's project, package versions), and
the process set-up every tunekit entry point shares."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("tunekit", "torch", "transformers", "peft", "datasets", "accelerate", "scikit-learn", "mlflow")


def git_commit(directory: Path) -> str | None:
    """HEAD of the git repository holding ``directory`` (suffixed ``-dirty`` with uncommitted
    changes), or None when it is not in a repository or git is missing."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=directory, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def quiet_libraries() -> None:
    """Keep the terminal for tunekit's own progress: no per-file weight-loading bars and no
    deprecation notices from one library about another (called by the CLI and worker processes)."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
