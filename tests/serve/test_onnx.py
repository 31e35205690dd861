"""ONNX Runtime for encoders (issue 19 item 1): ``tunekit export MODEL --format onnx`` writes an int8
graph beside the model only after checking it on the model's frozen test split, and
``tunekit serve --runtime onnx`` answers through it like the PyTorch model does.

One tiny LoRA classifier is trained (seconds) into a workspace whose frozen splits the export finds
by itself, and exported once through the CLI; the refusals swap the exporter for one that hands
back a damaged or intact copy of that graph, so they test the parity check without exporting again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import local_settings, synthetic_rows, write_csv
from tests.serve.conftest import _wait_ready
from tunekit.artifacts import Manifest
from tunekit.cli import app
from tunekit.errors import ModelError
from tunekit.models import load_trained, onnx
from tunekit.serve import create_app

TEXTS = ["where is my new card", "please refund the purchase today", "send money to a friend", "hi", "the transfer failed again now"]
TEMPERATURE = 1.7  # as if evaluation had calibrated the model: both runtimes must divide the logits by it


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert) -> Path:
    """A tiny LoRA classifier in WORKSPACE/runs/r1/adapter, trained on frozen splits in WORKSPACE/datasets; it
    reads the mean of its token states (``model.pooling: mean``), which the merge and the graph must keep."""
    from tunekit import data as data_stage
    from tunekit import train
    from tunekit.config import load_config

    root = tmp_path_factory.mktemp("onnx")
    write_csv(root / "train.csv", synthetic_rows(30, seed=1))
    write_csv(root / "test.csv", synthetic_rows(10, seed=2))
    (root / "config.yaml").write_text(yaml.safe_dump({
        "name": "tiny-intent", "workspace": str(root / "ws"), "data": {"train": "train.csv", "test": "test.csv"},
        "model": {"base": str(tiny_bert), "max_length": 32, "pooling": "mean"}, "method": {"kind": "lora", "r": 8, "alpha": 16},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-2, "head_learning_rate": 5e-2, "early_stopping_patience": 0,
                  "warmup_ratio": 0.0, "device": "cpu"}}))
    cfg = load_config(root / "config.yaml")
    out = root / "ws" / "runs" / "r1" / "adapter"
    train.run(cfg, data_stage.prepare(cfg), out)
    Manifest.update(out, temperature=TEMPERATURE)
    assert Manifest.read(out).pooling == "mean"
    return out


@pytest.fixture(scope="module")
def exported(trained) -> tuple[Path, str]:
    """``trained`` after `tunekit export PATH --format onnx` (the CLI's output is returned too)."""
    result = CliRunner().invoke(app, ["export", str(trained), "--format", "onnx"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return trained, result.output


def test_export_checks_parity_on_the_frozen_test_split(exported):
    model_dir, output = exported
    record = onnx.read_export(onnx.export_dir(model_dir))
    p = record.parity
    assert record.quantization == "int8" and record.merged  # the LoRA adapter was folded into the base before export
    assert p.rows == 30 and p.test_fingerprint == Manifest.read(model_dir).test_fingerprint  # the rows the model is evaluated on
    assert p.metric == "macro_f1" and p.low <= p.diff <= p.high and p.metric_drop <= p.max_metric_drop
    assert 0 < p.max_output_diff <= p.max_output_diff_allowed  # int8 moves the probabilities a little, within the tolerance
    said = " ".join(output.split())  # rich wraps long lines
    assert "macro_f1" in said and "95% interval" in said and f"tunekit serve --model {model_dir} --runtime onnx" in said
    assert onnx.file_sha256(onnx.export_dir(model_dir) / "model.onnx") == record.sha256
    assert not list(model_dir.glob(".onnx-export-*"))  # the temporary folder became onnx/


def test_served_onnx_answers_like_the_pytorch_model(exported):
    model_dir, _ = exported
    reference = load_trained(model_dir)
    expected = reference.predict_proba(TEXTS)
    settings = local_settings(model=str(model_dir), runtime="onnx")
    with TestClient(create_app(settings)) as client:
        _wait_ready(client)
        assert isinstance(client.app.state.slot.loaded.model.model, onnx.OnnxSequenceClassifier)
        answer = client.post("/v1/classify", json={"inputs": TEXTS})
    assert answer.status_code == 200, answer.text
    served = np.array([[row["probabilities"][label] for label in reference.labels] for row in answer.json()["predictions"]])
    tolerance = onnx.read_export(onnx.export_dir(model_dir)).parity.max_output_diff_allowed
    assert np.abs(served - expected).max() <= tolerance
    assert [row["label"] for row in answer.json()["predictions"]] == [reference.labels[i] for i in expected.argmax(1)]
    # the temperature is applied by the shared code: at T=1 every answer would be sharper than what was served
    sharper = load_trained(model_dir)
    sharper.info.temperature = 1.0
    assert (sharper.predict_proba(TEXTS).max(1) > served.max(1)).all()


def test_serving_onnx_without_an_export_names_the_command(trained, tmp_path):
    bare = shutil.copytree(trained, tmp_path / "adapter", ignore=shutil.ignore_patterns(onnx.EXPORT_DIR))
    result = CliRunner().invoke(app, ["serve", "--model", str(bare), "--runtime", "onnx", "--no-auth"])
    assert isinstance(result.exception, ModelError)
    assert f"tunekit export {bare} --format onnx" in str(result.exception)


def _copy_export(source: Path, damage: bool):
    """An exporter that hands back ``source``'s graph, with every int8 weight scrambled when ``damage``."""
    import onnx as onnx_format
    from onnx import numpy_helper

    def write(model, tokenizer, max_length, pairs, out_file, quantization="int8", per_channel=False):
        graph = onnx_format.load(str(source))
        if damage:
            rng = np.random.default_rng(0)
            for init in graph.graph.initializer:
                weights = numpy_helper.to_array(init)
                if weights.dtype == np.int8:
                    init.CopyFrom(numpy_helper.from_array(rng.integers(-127, 128, weights.shape).astype(np.int8), init.name))
                elif init.name.endswith("_scale"):  # and each weight's scale blown up, as a bit flip in an exponent would
                    init.CopyFrom(numpy_helper.from_array((weights * 100).astype(weights.dtype), init.name))
        onnx_format.save(graph, str(out_file))
        return ["input_ids", "token_type_ids", "attention_mask"]

    return write


@pytest.mark.parametrize("damage, tolerance, why", [
    (True, {}, r"a class probability differs by up to 0\.[3-9]"),         # a corrupted graph: its probabilities are far off
    (False, {"max_probability_diff": 1e-9}, "allowed: max_probability_diff 1e-09"),  # a sound graph, an absurdly tight tolerance
])
def test_an_export_outside_the_tolerance_is_refused_and_nothing_is_kept(exported, tmp_path, monkeypatch, damage, tolerance, why):
    from tunekit.pipeline import export_onnx as exporting

    model_dir, _ = exported
    workspace = model_dir.parents[2]
    copy = shutil.copytree(model_dir, workspace / "runs" / tmp_path.name / "adapter", ignore=shutil.ignore_patterns(onnx.EXPORT_DIR))
    monkeypatch.setattr(exporting.onnx, "write_onnx", _copy_export(onnx.export_dir(model_dir) / "model.onnx", damage))
    with pytest.raises(ModelError, match=why) as refused:
        exporting.export_onnx(copy, exporting.OnnxExportSettings(**tolerance))
    assert "Nothing was kept" in str(refused.value)
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in model_dir.iterdir() if p.name != onnx.EXPORT_DIR)


def test_onnx_passes_take_rows_of_like_length_and_each_row_gets_its_own_answer(exported, monkeypatch):
    from tunekit.serve.app import forward_rows
    from tunekit.serve.loading import default_loader, onnx_threads

    model_dir, _ = exported
    settings = local_settings(model=str(model_dir), runtime="onnx")
    loaded = default_loader(settings)
    session = loaded.model.model.session
    assert session.get_session_options().intra_op_num_threads == onnx_threads(settings)  # the threads shared by the concurrent passes
    texts = TEXTS * 3 + ["a much longer text about a card that never arrived in the post, not even after two weeks", "ok"]
    rows = [(t, None) for t in texts]
    served = np.array(forward_rows(loaded, rows, 32))
    alone = np.concatenate([loaded.model.predict_proba([t]) for t in texts])  # each row on its own: no padding at all
    assert served.shape == alone.shape
    assert np.abs(served - alone).max() <= onnx.read_export(onnx.export_dir(model_dir)).parity.max_output_diff_allowed

    passes = []

    def spy(batch, pairs=None, batch_size=64):  # answers each row with its length: the answers must come back in input order
        passes.append(batch)
        return np.array([[len(t)] for t in batch])

    monkeypatch.setattr(loaded.model, "predict_proba", spy)
    assert [row[0] for row in forward_rows(loaded, rows, 32)] == [len(t) for t in texts]
    assert sorted(t for p in passes for t in p) == sorted(texts) and len(passes) >= 3
    assert all(len(p) <= 8 and max(map(len, p)) <= min(map(len, p)) * 1.25 + 8 for p in passes)  # little padding in any pass
