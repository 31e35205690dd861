"""Two tiny trained classifiers shared by the server and monitor tests (trained once per session).

Kept out of the conftest files and imported by the root conftest, so one session trains each model
once, whichever folders' tests ask for it.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from tunekit.serve import LoadedModel

LABELS = ["card", "refund", "transfer"]
PHRASES = {
    "card": ["my card was declined", "the card is blocked", "card payment failed at the shop", "I lost my card", "new card please"],
    "refund": ["I want a refund", "refund my order", "where is my refund", "the refund has not arrived", "please refund the money"],
    "transfer": ["send a transfer abroad", "my transfer is pending", "transfer money to my friend", "the bank transfer failed", "cancel the transfer"],
}


def _rows(pairs: bool) -> dict[str, list]:
    ids, texts, text_pairs, labels = [], [], [], []
    for repeat in range(8):
        for label_id, label in enumerate(LABELS):
            for phrase in PHRASES[label]:
                ids.append(f"r{len(ids)}")
                texts.append(phrase if not pairs else f"customer message {repeat}")
                text_pairs.append(phrase)
                labels.append(label_id)
    rows = {"id": ids, "text": texts, "label": labels}
    if pairs:
        rows["text_pair"] = text_pairs
    return rows


def _train(root: Path, name: str, pairs: bool) -> Path:
    from datasets import Dataset

    from tunekit import train
    from tunekit.config import TunekitConfig
    from tunekit.models.tiny import build_tiny_bert

    rows = _rows(pairs)
    base = build_tiny_bert(root / "base", rows["text"] + rows.get("text_pair", []))
    data_cfg = {"train": "x.csv"} | ({"text_pair_column": "text_pair"} if pairs else {})
    cfg = TunekitConfig.model_validate({
        "name": name, "data": data_cfg, "model": {"base": str(base), "max_length": 32},
        "train": {"epochs": 10, "batch_size": 8, "learning_rate": 5e-3, "device": "cpu", "early_stopping_patience": 0}, "method": {"kind": "full"},
    })
    ds = Dataset.from_dict(rows)
    data = types.SimpleNamespace(train=ds, validation=ds, test=ds, labels=LABELS, fingerprint="fp", test_fingerprint="tfp")
    out = root / "model"
    train.run(cfg, data, out)
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A trained single-text tiny model directory named `tiny-intent`."""
    return _train(tmp_path_factory.mktemp("single"), "tiny-intent", pairs=False)


@pytest.fixture(scope="session")
def pair_model_dir(tmp_path_factory) -> Path:
    """A trained sentence-pair tiny model directory named `tiny-pair`."""
    return _train(tmp_path_factory.mktemp("pair"), "tiny-pair", pairs=True)


@pytest.fixture(scope="session")
def loaded(model_dir) -> LoadedModel:
    from tunekit.models import load_trained

    return LoadedModel(model=load_trained(model_dir), name="tiny-intent", version="7", source="tiny-intent/7")


@pytest.fixture(scope="session")
def loaded_pair(pair_model_dir) -> LoadedModel:
    from tunekit.models import load_trained

    return LoadedModel(model=load_trained(pair_model_dir), name="tiny-pair", version="2", source="tiny-pair@champion")
