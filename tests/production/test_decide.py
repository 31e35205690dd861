"""The live decision on synthetic arms with known accuracies: promote, roll back, need more data."""

import numpy as np
import pytest

from tunekit.monitor.decide import NEED_MORE, PROMOTE, ROLLBACK, Arm, decide, difference_interval, sample_size


def _arm(name: str, rate: float, n: int, seed: int) -> Arm:
    """``n`` labelled requests answered right with probability ``rate``."""
    correct = int(np.random.default_rng(seed).binomial(1, rate, n).sum())
    return Arm(name, "1" if name == "champion" else "2", n, correct)


@pytest.mark.parametrize("seed", range(5))
def test_a_clearly_better_challenger_is_promoted(seed):
    d = decide(_arm("champion", 0.70, 2000, seed), _arm("challenger", 0.85, 2000, seed + 100), margin=0.02)
    assert d.action == PROMOTE, d.summary()
    assert d.low > 0.02 and "promote v2" in d.summary()


@pytest.mark.parametrize("seed", range(5))
def test_a_clearly_worse_canary_is_rolled_back(seed):
    d = decide(_arm("champion", 0.85, 1500, seed), _arm("challenger", 0.70, 500, seed + 100), margin=0.0)
    assert d.action == ROLLBACK, d.summary()
    assert d.high < 0 and d.more_per_arm is None


def test_a_small_lead_needs_more_data_and_says_how_much():
    d = decide(Arm("champion", "1", 200, 160), Arm("challenger", "2", 200, 170), margin=0.0)  # 0.80 vs 0.85
    assert d.action == NEED_MORE
    assert d.low < 0 < d.high
    # the textbook size to detect 0.80 -> 0.85 one-sided at 2.5% with 80% power is about 900 per arm
    assert 800 < d.more_per_arm + 200 < 1000
    assert f"about {d.more_per_arm} more labelled requests" in d.summary()


def test_the_power_estimate_is_right_in_simulation():
    """Arms of the estimated size, at the true rates, promote about ``power`` of the time."""
    n = sample_size(0.80, 0.85, 0.05)
    rng = np.random.default_rng(0)
    wins = sum(decide(Arm("champion", "1", n, int(rng.binomial(n, 0.80))), Arm("challenger", "2", n, int(rng.binomial(n, 0.85)))).action == PROMOTE
               for _ in range(400))
    assert 0.70 < wins / 400 < 0.90


def test_a_lead_below_the_margin_is_never_promoted():
    d = decide(Arm("champion", "1", 5000, 4000), Arm("challenger", "2", 5000, 4100), margin=0.05)  # +0.02, clear of 0 but not of 0.05
    assert d.action == NEED_MORE and d.low > 0
    assert "margin + planning_effect" in d.summary()


def test_too_few_rows_give_no_verdict_whatever_the_interval():
    d = decide(Arm("champion", "1", 10, 0), Arm("challenger", "2", 10, 10), min_per_arm=20)
    assert d.action == NEED_MORE and d.more_per_arm >= 10
    assert decide(Arm("champion", "1", 0, 0), Arm("challenger", "2", 30, 20)).more_per_arm == 20


def test_the_difference_interval_covers_the_truth():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(500):
        a, b = Arm("champion", "1", 60, int(rng.binomial(60, 0.9))), Arm("challenger", "2", 60, int(rng.binomial(60, 0.8)))
        _, low, high = difference_interval(a, b)
        covered += low <= -0.1 <= high
    assert covered / 500 > 0.92


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="correct=5, n=3"):
        Arm("champion", "1", 3, 5)


def test_gate_live_holds_a_passing_version_as_challenger(tmp_path):
    from tunekit import registry
    from tunekit.registry import ChampionScore, decide as gate

    mlc = registry.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    versions = []
    for _ in range(2):
        run_id = registry.log_run(mlc, "m", tmp_path, params={}, metrics={}, tags={}, artifacts=[])
        versions.append(registry.register(mlc, "m", run_id, {}))
    first = gate("accuracy", 0.8, 0.7, 0.0, None)
    registry.set_alias(mlc, "m", versions[0], first, live=True)  # no champion yet: the first one becomes it
    assert first.alias == "champion" and str(registry.champion_version(mlc, "m").version) == "1"
    second = gate("accuracy", 0.85, 0.7, 0.0, ChampionScore("1", 0.8, "recorded"))
    registry.set_alias(mlc, "m", versions[1], second, live=True)
    assert second.passed and second.alias == "challenger" and "live decision" in second.summary()
    assert str(registry.champion_version(mlc, "m").version) == "1"
    assert str(mlc.get_model_version_by_alias("m", "challenger").version) == "2"
