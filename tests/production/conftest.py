"""Fixtures for the production-loop tests: the tiny served classifier of tests/serve as champion
(v7) and a challenger (v8) that is the same network with its probabilities shifted one label on,
so its answers are known to differ from the champion's on every input."""

from __future__ import annotations

import numpy as np
import pytest

from tunekit.serve import LoadedModel


class Shifted:
    """A classifier answering like ``inner`` with each row's probabilities rolled one label on; ``fail``: every call raises."""

    def __init__(self, inner, fail: bool = False):
        self.inner, self.fail = inner, fail

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_proba(self, texts, pairs=None, batch_size=64):
        if self.fail:
            raise RuntimeError("challenger exploded")
        return np.roll(self.inner.predict_proba(texts, pairs, batch_size), 1, axis=1)


@pytest.fixture(scope="session")
def challenger(loaded) -> LoadedModel:
    return LoadedModel(model=Shifted(loaded.model), name="tiny-intent", version="8", source="tiny-intent/8")


@pytest.fixture
def two_models(loaded, challenger, loaded_pair):
    """A loader serving the champion for tiny-intent/7, the challenger for tiny-intent/8, a failing challenger for
    tiny-intent/9 and the sentence-pair model (another kind of input) for tiny-pair/2."""
    failing = LoadedModel(model=Shifted(loaded.model, fail=True), name="tiny-intent", version="9", source="tiny-intent/9")
    table = {"tiny-intent/7": loaded, "tiny-intent/8": challenger, "tiny-intent/9": failing, "tiny-pair/2": loaded_pair}
    return lambda settings: table[settings.model]


from tests.monitor.conftest import keyword_model_dir, train_rows, validation_rows  # noqa: E402,F401  (the monitor's keyword model)
from tests.serve.conftest import greeter_dir  # noqa: E402,F401  (the served greeter adapter: the generation champion)
