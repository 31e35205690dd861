from tunekit.registry import ChampionScore, decide


def test_beats_baseline_and_no_champion():
    d = decide("macro_f1", 0.80, 0.70, 0.0, None)
    assert d.passed and d.alias == "champion"
    assert "beats the baseline's 0.7000 by +0.1000" in d.summary()
    assert "no current champion" in d.summary()


def test_margin_required():
    d = decide("macro_f1", 0.72, 0.70, 0.05, None)
    assert not d.passed and d.alias == "challenger"
    assert "required +0.0500" in d.summary()


def test_equal_to_baseline_is_not_beating_it():
    assert not decide("accuracy", 0.7, 0.7, 0.0, None).passed
    assert decide("accuracy", 0.69, 0.7, -0.02, None).passed  # a negative margin knowingly accepts a small loss


def test_champion_must_not_be_worse():
    champ = ChampionScore("3", 0.85, "recorded")
    below = decide("macro_f1", 0.80, 0.70, 0.0, champ)
    assert not below.passed and "below champion v3's 0.8500" in below.summary()
    assert decide("macro_f1", 0.85, 0.70, 0.0, champ).passed
    assert decide("macro_f1", 0.80, 0.70, 0.0, champ, beat_champion=False).passed
