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
    tie = decide("accuracy", 0.7, 0.7, 0.0, None)
    assert not tie.passed and "a tie is not a gain" in tie.summary()
    assert decide("accuracy", 0.7, 0.7, -0.001, None).passed  # the documented way to accept ties
    assert decide("accuracy", 0.69, 0.7, -0.02, None).passed  # a negative margin knowingly accepts a small loss


def test_champion_must_not_be_worse():
    champ = ChampionScore("3", 0.85, "recorded")
    below = decide("macro_f1", 0.80, 0.70, 0.0, champ)
    assert not below.passed and "below champion v3's 0.8500" in below.summary()
    assert decide("macro_f1", 0.85, 0.70, 0.0, champ).passed
    assert decide("macro_f1", 0.80, 0.70, 0.0, champ, beat_champion=False).passed


def test_error_metrics_are_better_when_lower():
    # rmse: the model's 3.0 against the baseline's 4.0 is an improvement of 1.0
    d = decide("rmse", 3.0, 4.0, 0.0, None)
    assert d.passed and "beats the baseline's 4.0000 by +1.0000 (lower is better; required +0.0000)" in d.summary()
    assert not decide("rmse", 4.5, 4.0, 0.0, None).passed  # a higher error never beats the baseline
    assert not decide("mae", 4.0, 4.0, 0.0, None).passed   # equal is not beating it
    assert decide("mse", 3.0, 4.0, 0.5, None).passed        # improvement 1.0 >= required 0.5
    margin = decide("mse", 3.8, 4.0, 0.5, None)
    assert not margin.passed and "margin +0.2000" in margin.summary()
    assert decide("rmse", 4.1, 4.0, -0.2, None).passed      # a negative margin knowingly accepts a small loss


def test_error_metric_champion_must_not_be_higher():
    champ = ChampionScore("2", 3.0, "recorded")
    above = decide("rmse", 3.5, 5.0, 0.0, champ)
    assert not above.passed and "above champion v2's 3.0000" in above.summary()
    level = decide("rmse", 3.0, 5.0, 0.0, champ)
    assert level.passed and "not above champion v2's 3.0000" in level.summary()
    assert decide("rmse", 2.5, 5.0, 0.0, champ).passed


def test_r2_is_better_when_higher():
    assert decide("r2", 0.8, 0.6, 0.1, None).passed
    assert not decide("r2", 0.6, 0.8, 0.0, None).passed
    assert not decide("r2", 0.85, 0.6, 0.0, ChampionScore("1", 0.9, "recorded")).passed


def test_every_task_of_a_multitask_model_must_beat_its_baseline():
    tasks = {"intent": {"a": 0.70, "b": 0.80}, "mood": {"a": 0.90, "b": 0.88}}  # the headline can rise while one task falls
    d = decide("macro_f1", 0.84, 0.80, 0.0, None, tasks=tasks)
    assert not d.passed and any(r.startswith("task mood:") for r in d.reasons)
    assert not any(r.startswith("task intent:") for r in d.reasons)
    assert decide("macro_f1", 0.84, 0.80, -0.05, None, tasks=tasks).passed  # a margin of -0.05 accepts mood's -0.02
