"""A run killed at any point resumes from its checkpoint to the same weights and metrics as an
uninterrupted run with the same seed."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tunekit import data, train
from tunekit.train import checkpoint
from tunekit.config import load_config
from tunekit.errors import TunekitError
from tunekit.models import load_trained


def _losses(result):
    return [(h["train_loss"], h["val_macro_f1"]) for h in result.history]


def test_crash_mid_epoch_then_resume_matches_uninterrupted(tiny_config, tmp_path, monkeypatch):
    cfg = load_config(tiny_config(train={"epochs": 4, "checkpoint_every": 5}))
    prepared = data.prepare(cfg)
    clean = train.run(cfg, prepared, tmp_path / "clean" / "adapter")

    saves = []
    original = checkpoint.save

    def crash_on_third(*args):
        original(*args)
        saves.append(1)
        if len(saves) == 7:  # mid-way through the second epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, prepared, tmp_path / "crash" / "adapter")
    assert (tmp_path / "crash" / "checkpoint.pt").exists()
    monkeypatch.setattr(checkpoint, "save", original)
    resumed = train.run(cfg, prepared, tmp_path / "crash" / "adapter", resume=True)

    assert _losses(resumed) == _losses(clean)
    assert not (tmp_path / "crash" / "checkpoint.pt").exists()
    texts = list(prepared.test["text"])
    np.testing.assert_array_equal(load_trained(tmp_path / "crash" / "adapter").predict_proba(texts),
                                  load_trained(tmp_path / "clean" / "adapter").predict_proba(texts))


def test_resume_refuses_changed_data_or_a_missing_checkpoint(tiny_config, tmp_path):
    cfg = load_config(tiny_config(train={"epochs": 1}))
    prepared = data.prepare(cfg)
    with pytest.raises(TunekitError, match="nothing to resume"):
        train.run(cfg, prepared, tmp_path / "x" / "adapter", resume=True)
    checkpoint.save(tmp_path / "x" / "checkpoint.pt", {"data_fingerprint": "other", "config_hash": cfg.hash()},
                          checkpoint.LoopState(), *_parts(cfg, prepared))
    with pytest.raises(TunekitError, match="data fingerprint is other"):
        train.run(cfg, prepared, tmp_path / "x" / "adapter", resume=True)


def _parts(cfg, prepared):
    import torch

    from tunekit.models import load_base

    model, _ = load_base(cfg.model.base, prepared.labels)
    model._tunekit_trainable = {n for n, _ in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters())
    return model.state_dict(), opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), np.random.default_rng(0)


@pytest.mark.slow
def test_kill_9_then_tunekit_run_resume(tiny_config, tmp_path):
    cfg_path = tiny_config(train={"epochs": 30, "checkpoint_every": 5})
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "tunekit.cli", "run", str(cfg_path)]
    proc = subprocess.Popen(cli, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "ws" / "runs"
    deadline = time.time() + 120
    while not list(runs.glob("*/checkpoint.pt")):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it wrote a checkpoint"
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = next(runs.iterdir()).name
    resumed = subprocess.run(cli + ["--resume", run_id], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    clean = subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr[-2000:]
    cards = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/report.json")}
    assert len(cards) == 2
    a, b = cards[run_id], next(c for k, c in cards.items() if k != run_id)
    assert [h["train_loss"] for h in a["train"]["history"]] == [h["train_loss"] for h in b["train"]["history"]]
    assert a["model"]["metrics"] == b["model"]["metrics"]


class _Planted:
    """What an attacker would put in a checkpoint: unpickling it touches ``marker`` (it could run anything)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_resume_never_runs_code_planted_in_a_checkpoint(tiny_config, tmp_path):
    """Issue 14 item 10: --resume loads its checkpoint with weights_only=True, so a pickle that runs
    code is refused with the file's name, and the code never runs."""
    import torch

    cfg = load_config(tiny_config(train={"epochs": 1}))
    prepared = data.prepare(cfg)
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "x" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save({"data_fingerprint": prepared.fingerprint, "config_hash": cfg.hash(), "payload": _Planted(marker)}, checkpoint)
    with pytest.raises(TunekitError, match=r"cannot resume from .*checkpoint\.pt: it is not a checkpoint tunekit can load safely"):
        train.run(cfg, prepared, tmp_path / "x" / "adapter", resume=True)
    assert not marker.exists()
    _Planted(marker).__reduce__()[0](marker)  # the payload does work when called: the test can fail
    assert marker.exists()


def test_checkpoint_round_trips_through_the_safe_loader(tiny_config, tmp_path):
    """Everything checkpoint.save writes (NumPy batch order and RNG state included) loads with weights_only=True."""
    cfg = load_config(tiny_config(train={"epochs": 1}))
    prepared = data.prepare(cfg)
    st = checkpoint.LoopState(batches=[np.arange(4), np.arange(4, 8)], best_score=np.float64(0.5), history=[{"val": np.float64(0.25)}])
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"data_fingerprint": "f", "config_hash": "h"}, st, *_parts(cfg, prepared))
    state = checkpoint.load(path)
    assert state["data_fingerprint"] == "f" and state["loop"]["best_score"] == 0.5
    np.testing.assert_array_equal(state["loop"]["batches"][1], np.arange(4, 8))
