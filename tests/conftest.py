"""Shared fixtures: a tiny synthetic intent task and a tiny BERT trained on nothing, built in code.

Nothing here needs the network, a GPU or ../shared/; the end-to-end test uses the BANKING77 copy
shipped in examples/.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
INTENTS = {
    "card": ["my card has not arrived", "where is my new card", "card still not delivered", "when will the card come"],
    "refund": ["i want my money back", "please refund the purchase", "refund for the order", "how do i get a refund"],
    "transfer": ["send money to a friend", "the transfer failed", "transfer to another account", "my transfer is pending"],
}


def synthetic_rows(n_per_label: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts per intent with random filler words, so the task is learnable but not trivial."""
    rng = random.Random(seed)
    filler = ["please", "today", "again", "hi", "thanks", "urgent", "now", "help"]
    rows = []
    for label, texts in INTENTS.items():
        for _ in range(n_per_label):
            words = rng.choice(texts).split() + rng.sample(filler, 2)
            rng.shuffle(words)
            rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a vocabulary learnt from the synthetic texts."""
    from tunekit.models.tiny import build_tiny_bert

    texts = [t for t, _ in synthetic_rows(30)]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


@pytest.fixture
def tiny_config(tmp_path, tiny_bert):
    """Write a config for the synthetic task on the tiny BERT; returns a function taking overrides."""
    return tiny_config_in(tmp_path, tiny_bert)


def tiny_config_in(tmp_path: Path, tiny_bert: Path):
    """``tiny_config`` in a given folder (for a module-scoped run that several tests read)."""
    import yaml

    write_csv(tmp_path / "train.csv", synthetic_rows(60, seed=1))
    write_csv(tmp_path / "test.csv", synthetic_rows(10, seed=2))

    def make(**sections) -> Path:
        raw = {
            "name": "tiny-intent",
            "workspace": str(tmp_path / "ws"),
            "data": {"train": "train.csv", "test": "test.csv"},
            "model": {"base": str(tiny_bert), "max_length": 32},
            "method": {"kind": "lora", "r": 8, "alpha": 16},
            "train": {"epochs": 12, "batch_size": 8, "learning_rate": 5e-3, "head_learning_rate": 2e-2,
                      "early_stopping_patience": 0, "warmup_ratio": 0.0},
        }
        for key, value in sections.items():
            merge = isinstance(value, dict) and key != "method"  # a new method kind brings its own options
            raw[key] = {**raw.get(key, {}), **value} if merge else value
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return make


def local_settings(**fields):
    """Server settings for tests: auth off (as for local use) and the request log in a fresh temporary folder."""
    import tempfile

    from tunekit.serve import ServeSettings

    return ServeSettings(**{"auth": False, "workspace": tempfile.mkdtemp(prefix="tunekit-serve-"), **fields})


# trained once per session, for the server and the monitor tests alike
from tests.classifier_fixtures import loaded, loaded_pair, model_dir, pair_model_dir  # noqa: F401
