"""Data-parallel training: two processes (gloo, on CPU, DDP prepared by accelerate) train to the same
weights and validation metrics as one process with the same global batch; the launcher (torch's
elastic launcher) reports failures."""

import json
import os
import shutil
import textwrap

import numpy as np
import pytest

from tunekit import data, train
from tunekit.config import load_config
from tunekit.train import distributed

TRAIN_SCRIPT = """
import json, sys
from pathlib import Path
from tunekit import data, train
from tunekit.config import load_config
from tunekit.train import distributed

cfg, out = load_config(sys.argv[1]), Path(sys.argv[2])
result = train.run(cfg, data.prepare(cfg), out / "adapter")
if distributed.is_main():
    (out / "result.json").write_text(json.dumps({"history": result.history, "world": distributed.world_size()}))
"""

GENERATION_SCRIPT = """
import json, sys
from pathlib import Path
from rich.console import Console
from tunekit.config import load_config
from tunekit.data.conversations import prepare_conversations
from tunekit.models import load_tokenizer, templates
from tunekit.train import distributed, run

cfg, out = load_config(sys.argv[1]), Path(sys.argv[2])
tokenizer = load_tokenizer(cfg.model.base)
result = run(cfg, prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, "auto")), out / "adapter", Console(quiet=True))
if distributed.is_main():
    (out / "result.json").write_text(json.dumps({"history": result.history, "world": distributed.world_size()}))
"""


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 2, 7, 8])
def test_shards_cover_the_global_batch_in_order(world, size):
    rows = np.arange(100, 100 + size)
    shards = [distributed.shard(rows, r, world) for r in range(world)]
    assert sum(real for _, real in shards) == size
    rebuilt = np.empty(size, dtype=rows.dtype)
    for r, (mine, real) in enumerate(shards):
        if real:
            rebuilt[r::world] = mine  # rank r holds rows r, r + world, ...
        else:  # fewer rows than ranks: this rank joins the all-reduce on a row weighted 0
            assert r >= size and list(mine) == [100]
    assert list(rebuilt) == list(rows)


def test_one_process_is_not_distributed():
    assert not distributed.init() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.gather_rows(lambda a, b: np.asarray(a) * 2, [1, 2, 3], None).tolist() == [2, 4, 6]
    mine, real = distributed.shard(np.arange(5))
    assert mine.tolist() == [0, 1, 2, 3, 4] and real == 5


@pytest.mark.parametrize("unfreeze", [False, True], ids=["all-trained", "gradual-unfreezing"])
def test_two_processes_train_like_one_with_the_same_global_batch(tiny_config, tiny_bert, tmp_path, unfreeze):
    """LoRA on the tiny BERT, dropout 0 (each rank would draw its own dropout masks), batch 7 so the
    last batch of 162 rows has one row and rank 1 runs its weight-0 stand-in row. Gradual unfreezing
    leaves trainable weights without gradients: DDP must be told (find_unused_parameters)."""
    from safetensors.torch import load_file

    base = tmp_path / "bert-no-dropout"
    shutil.copytree(tiny_bert, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    path = tiny_config(model={"base": str(base)}, method={"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                       train={"epochs": 3, "batch_size": 7, "checkpoint_every": 0, "gradual_unfreezing": unfreeze})
    cfg = load_config(path)
    prepared = data.prepare(cfg)  # freezes the splits once, before the ranks read them
    assert len(prepared.train) % 7 == 1
    one = train.run(cfg, prepared, tmp_path / "one" / "adapter")

    script = tmp_path / "train_script.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT))
    assert distributed.launch(2, [str(script), str(path), str(tmp_path / "two")], module=None) == 0
    two = json.loads((tmp_path / "two" / "result.json").read_text())

    assert two["world"] == 2
    for a, b in zip(one.history, two["history"], strict=True):
        assert (a["val_macro_f1"], a["val_accuracy"]) == (b["val_macro_f1"], b["val_accuracy"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert one.history[-1]["train_loss"] < one.history[0]["train_loss"]  # it trained
    w1, w2 = (load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("one", "two"))
    assert w1.keys() == w2.keys() and len(w1) > 0
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


PRIMITIVES_SCRIPT = """
import json, sys, time
import numpy as np, torch
from tunekit.train import distributed

assert distributed.init() and distributed.world_size() == 2
r = distributed.rank()
with distributed.main_first():
    time.sleep(0.3 if r == 0 else 0)
    with open(sys.argv[1] + "/order.txt", "a") as fh:
        fh.write(str(r))
rows = distributed.gather_rows(lambda t, _: np.asarray([[x, distributed.rank()] for x in t]), list(range(5)), None)
out = {"mean": distributed.all_reduce_mean(torch.tensor([1.0 + r])).item(), "sum": distributed.all_reduce_sum(torch.tensor([1.0 + r])).item(),
       "broadcast": distributed.broadcast("from %d" % r), "rows": rows.tolist(), "shard": distributed.shard(np.arange(5))[0].tolist()}
with open(sys.argv[1] + "/rank%d.json" % r, "w") as fh:
    json.dump(out, fh)
distributed.barrier()
"""


def test_two_processes_share_and_combine(tmp_path):
    script = tmp_path / "primitives.py"
    script.write_text(textwrap.dedent(PRIMITIVES_SCRIPT))
    assert distributed.launch(2, [str(script), str(tmp_path)], module=None) == 0
    assert (tmp_path / "order.txt").read_text() == "01"  # rank 0 first, however slow
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, out in enumerate(ranks):
        assert (out["mean"], out["sum"], out["broadcast"]) == (1.5, 3.0, "from 0")
        assert out["rows"] == [[0, 0], [1, 1], [2, 0], [3, 1], [4, 0]]  # rows in order, each scored by its rank
        assert out["shard"] == list(range(5))[r::2]


PARALLEL_SCRIPT = """
import json, sys
import torch
from tunekit.train import distributed

assert distributed.init()
r = distributed.rank()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))

def make_optimizer(m):
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))

par = distributed.parallel(model, make_optimizer, find_unused=True)
x = torch.tensor([[1.0 + r, 2.0, 3.0]])
with par.no_sync(False):  # a micro-batch before the step's last: this rank's own gradient
    par.backward(par.model(x).sum())
own = model[0].weight.grad.clone()
with par.no_sync(True):  # the last: the accumulated gradients, averaged over the ranks
    par.backward(par.model(x).sum())
synced = model[0].weight.grad.clone()
par.step(1e9)
out = {"ddp": type(par.model).__name__, "find_unused": par.model.find_unused_parameters, "optimizer": type(par.optimizer).__name__,
       "scheduler": type(par.scheduler).__name__, "lr": par.optimizer.param_groups[0]["lr"], "sharded": par.sharded,
       "bare": par.module is model and par.eval_model is model, "accelerate": par.accelerator is not None,
       "own": own.tolist(), "synced": synced.tolist(), "weight": par.state({"0.weight"})["0.weight"].tolist()}
with open(sys.argv[1] + "/rank%d.json" % r, "w") as fh:
    json.dump(out, fh)
"""


def test_several_processes_go_through_accelerate_with_the_loops_semantics(tmp_path):
    """DDP comes from Accelerator.prepare with find_unused_parameters passed through; no_sync keeps a
    rank's gradients local, the synced backward averages them unscaled (accelerate's accumulation is
    one step), the optimizer steps once and the schedule is ours, stepped once."""
    script = tmp_path / "parallel.py"
    script.write_text(textwrap.dedent(PARALLEL_SCRIPT))
    assert distributed.launch(2, [str(script), str(tmp_path)], module=None) == 0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for out in ranks:
        assert (out["ddp"], out["find_unused"], out["optimizer"], out["scheduler"]) == (
            "DistributedDataParallel", True, "AcceleratedOptimizer", "LambdaLR")
        assert out["accelerate"] and out["bare"] and not out["sharded"]
        assert out["lr"] == pytest.approx(0.05)  # 0.1 / (1 + 1): one schedule step
    own0, own1 = np.asarray(ranks[0]["own"]), np.asarray(ranks[1]["own"])
    assert not np.allclose(own0, own1)  # no_sync: each rank its own gradient
    for out in ranks:  # (2 g0 + 2 g1) / 2 on both ranks
        np.testing.assert_allclose(out["synced"], own0 + own1, rtol=1e-6)
    assert ranks[0]["weight"] == ranks[1]["weight"]


def test_launcher_stops_the_run_when_a_rank_fails(tmp_path, capfd):
    script = tmp_path / "fail.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['RANK'] == '1':\n    sys.stderr.write('rank one broke\\n'); sys.exit(3)\n"
                      "time.sleep(60)\n")
    assert distributed.launch(2, [str(script)], module=None) == 3  # at once: rank 0 is stopped, not waited for
    err = capfd.readouterr().err
    assert "rank 1 of 2 failed (exit code 3)" in err and "rank one broke" in err


def test_launcher_returns_rank_0s_exit_code(tmp_path):
    script = tmp_path / "exit.py"
    before = os.environ.get("OMP_NUM_THREADS")
    threads = before or str(max(1, (os.cpu_count() or 1) // 3))  # cores // N unless set
    script.write_text("import os, sys\nassert os.environ['WORLD_SIZE'] == '3' and os.environ['MASTER_ADDR'] == '127.0.0.1'\n"
                      f"assert os.environ['OMP_NUM_THREADS'] == {threads!r}\n"
                      "sys.exit(10 if os.environ['RANK'] == '0' else 0)\n")
    assert distributed.launch(3, [str(script)], module=None) == 10
    assert os.environ.get("OMP_NUM_THREADS") == before  # this process's environment is put back


def test_the_failure_reported_is_the_cause_not_a_rank_the_launcher_stopped():
    """torch's launcher lists the ranks it stopped (SIGTERM) as failed too, stamped to the second."""
    from types import SimpleNamespace as Failure

    assert distributed._first_failure({0: Failure(exitcode=-15, timestamp=10), 1: Failure(exitcode=3, timestamp=11)}) == (1, 3)
    assert distributed._first_failure({0: Failure(exitcode=1, timestamp=10), 1: Failure(exitcode=-15, timestamp=10)}) == (0, 1)
    assert distributed._first_failure({0: Failure(exitcode=-15, timestamp=10), 1: Failure(exitcode=-9, timestamp=10)}) == (1, 137)
    assert distributed._first_failure({0: Failure(exitcode=-15, timestamp=10), 1: Failure(exitcode=-15, timestamp=10)}) == (0, 143)


def test_classification_refuses_fsdp(monkeypatch):
    from tunekit.errors import TunekitError

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(TunekitError, match="FSDP and DeepSpeed are for task: generation"):
        distributed.parallel(object(), lambda m: (None, None))


@pytest.fixture
def reverse_task(tmp_path):
    """A small LoRA run of the reverse-a-list task on a tiny Llama (no dropout anywhere), with
    gradient accumulation so DDP's no_sync micro-batches are exercised."""
    import yaml

    from tests.generation.conftest import reverse_rows, write_jsonl
    from tunekit.models.tiny import build_tiny_llama

    llama = build_tiny_llama(tmp_path / "llama", [r["messages"][0]["content"] for r in reverse_rows(200)], hidden_size=64, layers=2)
    write_jsonl(tmp_path / "train.jsonl", reverse_rows(200))
    raw = {"name": "reverse", "task": "generation", "workspace": str(tmp_path / "ws"),
           "data": {"train": "train.jsonl", "split": {"validation": 0.1, "test": 0.15, "seed": 3}},
           "model": {"base": str(llama), "max_length": 48}, "method": {"kind": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
           "train": {"epochs": 2, "batch_size": 7, "learning_rate": 3e-3, "weight_decay": 0.0, "early_stopping_patience": 0,
                     "checkpoint_every": 0, "gradient_accumulation_steps": 2}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "config.yaml"


def _train_generation(path, out):
    from rich.console import Console

    from tunekit.data.conversations import prepare_conversations
    from tunekit.models import load_tokenizer, templates

    cfg = load_config(path)
    tokenizer = load_tokenizer(cfg.model.base)
    return train.run(cfg, prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, "auto")), out, Console(quiet=True))


def _max_weight_diff(a, b, name="adapter_model.safetensors") -> float:
    from safetensors.torch import load_file

    w1, w2 = load_file(a / name), load_file(b / name)
    assert w1.keys() == w2.keys() and len(w1) > 0
    return max((w1[k] - w2[k]).abs().max().item() for k in w1)


def test_two_processes_train_a_causal_lm_like_one(reverse_task, tmp_path):
    one = _train_generation(reverse_task, tmp_path / "one" / "adapter")
    script = tmp_path / "generation_script.py"
    script.write_text(textwrap.dedent(GENERATION_SCRIPT))
    assert distributed.launch(2, [str(script), str(reverse_task), str(tmp_path / "two")], module=None) == 0
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["world"] == 2
    for a, b in zip(one.history, two["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)  # summed over the ranks' shares of the rows
    assert _max_weight_diff(tmp_path / "one" / "adapter", tmp_path / "two" / "adapter") < 1e-4


@pytest.mark.parametrize("kind", ["fsdp", "fsdp2"])
def test_the_accelerate_prepared_loop_trains_like_the_plain_one(reverse_task, tmp_path, monkeypatch, kind):
    """The FSDP/DeepSpeed code path (Accelerator.prepare, accelerator.backward and clipping, gathered
    best weights saved through save_pretrained(state_dict=...)), run in one CPU process where
    accelerate shards nothing: it must give the plain loop's weights. ``fsdp`` builds the optimizer
    on the prepared model (FSDP1's order), ``fsdp2`` prepares model and optimizer together."""
    from accelerate.state import AcceleratorState

    plain = _train_generation(reverse_task, tmp_path / "plain" / "adapter")
    used = []

    def prepared_by_accelerate(model, make_optimizer, **kw):
        used.append(distributed._accelerate(model, make_optimizer, kind, kw["micro_rows"], kw["max_grad_norm"]))
        return used[-1]

    monkeypatch.setattr(distributed, "parallel", prepared_by_accelerate)
    try:
        accelerated = _train_generation(reverse_task, tmp_path / "accelerate" / "adapter")
    finally:
        AcceleratorState._reset_state(True)
    assert len(used) == 1 and used[0].sharded and type(used[0].optimizer).__name__ == "AcceleratedOptimizer"
    assert [h["val_loss"] for h in accelerated.history] == pytest.approx([h["val_loss"] for h in plain.history], rel=1e-6)
    assert _max_weight_diff(tmp_path / "plain" / "adapter", tmp_path / "accelerate" / "adapter") < 1e-6
