"""``tunekit export MODEL --format onnx``: an int8 ONNX Runtime export of an encoder model, kept only
if it answers the model's frozen test split like the PyTorch model does.

The recipe: read the model folder's manifest (task, config, data fingerprint), find the frozen
splits it was evaluated on in its workspace (the rows ``eval.max_test_rows`` sampled, if it did),
score the PyTorch model on them as evaluation did, fold a LoRA-family adapter into its base, write
the graph and quantise it (``models.onnx.write_onnx``) into a temporary folder beside the weights,
score that file through the loader the server uses, and compare:

- the primary metric's paired difference (ONNX minus PyTorch) with its bootstrap interval
  (``evaluate.stats.paired_bootstrap``: both models on the same resampled rows);
- the largest difference of one class probability on one row (regression: of one predicted
  value, in standard deviations of the training target), and how often the labels agree.

Outside the tolerance (``OnnxExportSettings``) the temporary folder is deleted and the error says
by how much; inside it, the folder becomes ``MODEL_DIR/onnx/`` in one rename, with the comparison
in its ``export.json``. Why here and not in ``models``: the check needs the data and evaluate
stages, which sit above ``models``; this module chains them as ``reproduce`` does.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunekit import task_kinds
from tunekit.artifacts import Manifest, Workspace
from tunekit.config import TunekitConfig, lower_is_better
from tunekit.errors import ConfigError, DataError, ModelError
from tunekit.models import onnx

__all__ = ["OnnxExportResult", "OnnxExportSettings", "export_onnx", "frozen_test"]


class OnnxExportSettings(BaseModel):
    """How ``tunekit export MODEL --format onnx`` writes the export and how close to the PyTorch model it must answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantization: Literal["int8", "f32"] = Field("int8", description="`int8`: dynamic quantisation (weights stored as int8, activations quantised per batch at run time; about 4x smaller and faster on CPU); `f32`: the float32 graph as exported (the same answers up to rounding).")
    per_channel: bool = Field(False, description="int8: quantise each weight matrix per output channel instead of per tensor (closer to float32, a little slower).")
    max_metric_drop: float = Field(0.01, ge=0, description="Largest drop of the primary metric (`eval.primary`) on the frozen test split, ONNX against PyTorch, in the metric's units (0.01 = 1 point of macro F1; RMSE in the target's units); a larger drop refuses the export.")
    max_probability_diff: float = Field(0.1, gt=0, le=1, description="Classification: largest difference of one class probability on one test row between ONNX and PyTorch; a larger one refuses the export.")
    max_value_diff: float = Field(0.1, gt=0, description="Regression: largest difference of one predicted value between ONNX and PyTorch, in standard deviations of the training target; a larger one refuses the export.")
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000, description="Paired bootstrap resamples for the interval of the metric's difference.")


@dataclass
class OnnxExportResult:
    folder: Path                 # MODEL_DIR/onnx
    record: onnx.OnnxExport      # what export.json holds
    recorded_metric: float | None  # the primary metric the model's manifest recorded at evaluation (same rows)
    size_bytes: int


def export_onnx(model_dir: str | Path, settings: OnnxExportSettings | None = None, data=None, workspace: str | Path | None = None,
                model_ref: str | None = None) -> OnnxExportResult:
    """Export ``model_dir`` to ``MODEL_DIR/onnx/``, checked on its frozen test split; ``ModelError`` and nothing kept outside the tolerance.

    ``data`` (anything with ``test``, ``labels``, ``test_fingerprint``) replaces the frozen split
    (benchmarks, tests); ``workspace`` is where the frozen split is (default: found from the folder)."""
    from tunekit.models import load_trained

    settings = settings or OnnxExportSettings()
    model_dir = Path(model_dir)
    ref = model_ref or str(model_dir)
    info = Manifest.read(model_dir)
    onnx.check_exportable(model_dir, info)
    dest = onnx.export_dir(model_dir)
    if dest.exists():
        raise ModelError(f"{ref} already has an ONNX export in {dest}; delete that folder to export again")
    cfg = _config(ref, info)
    data = data if data is not None else frozen_test(model_dir, info, cfg, workspace)
    reference = load_trained(model_dir)  # the model as it was evaluated (adapter unmerged)
    torch_metrics, torch_out = _score(reference, data, cfg)

    tmp = model_dir / f".onnx-export-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        merged = _merged(reference)
        names = onnx.write_onnx(merged.model, reference.tokenizer, info.max_length, info.text_pair, tmp / onnx.MODEL_FILE,
                                settings.quantization, settings.per_channel)
        outputs = int(merged.model.config.num_labels)
        candidate = onnx.onnx_model(model_dir, tmp / onnx.MODEL_FILE, outputs, info=info)
        onnx_metrics, onnx_out = _score(candidate, data, cfg)
        parity = _parity(cfg, info, data, settings, torch_metrics, torch_out, onnx_metrics, onnx_out)
        _refuse_outside_tolerance(ref, parity, settings)
        record = onnx.OnnxExport(sha256=onnx.file_sha256(tmp / onnx.MODEL_FILE), quantization=settings.quantization,
                                 per_channel=settings.per_channel, inputs=names, outputs=outputs, merged=merged is not reference,
                                 versions=onnx.versions(), created_at=onnx.now(), parity=parity)
        (tmp / onnx.EXPORT_RECORD).write_text(record.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the export was kept
    return OnnxExportResult(dest, record, info.metrics.get(cfg.eval.primary), (dest / onnx.MODEL_FILE).stat().st_size)


def frozen_test(model_dir: Path, info: Manifest, cfg: TunekitConfig, workspace: str | Path | None = None):
    """The frozen splits ``info.data_fingerprint`` names, with the test rows the model was evaluated on
    (``eval.max_test_rows`` applied as evaluation applied it), from ``workspace`` or, by default, the
    workspace the model folder sits in, else its config's."""
    from tunekit.data import store
    from tunekit.data.prepare import PreparedData, limit_test

    fp = info.data_fingerprint
    if not fp:
        raise ModelError(f"{model_dir}: its tunekit.json records no data fingerprint, "
                         "so there is no frozen test split to check the export on; export a model trained by `tunekit run`")
    roots = [Path(workspace)] if workspace else [*Path(model_dir).resolve().parents, cfg.workspace_dir]
    found = next((Workspace(r).dataset(fp) for r in roots if (Workspace(r).dataset(fp) / "meta.json").is_file()), None)
    if found is None:
        where = str(workspace) if workspace else f"the workspaces above {model_dir} and {cfg.workspace_dir}"
        raise DataError(f"{model_dir}: no frozen splits for its data fingerprint {fp[:16]} in {where}; pass --workspace (the workspace "
                        "it was trained in), or freeze the data again with `tunekit data check CONFIG` on the original files")
    frozen = store.read_directory(found)  # checks the rows still hash to the fingerprint
    test, test_fp, _ = limit_test(cfg, frozen.datasets["test"], frozen.rows["test"], frozen.test_fingerprint)
    if info.test_fingerprint and test_fp != info.test_fingerprint:
        raise DataError(f"{model_dir}: the test rows in {found} hash to {test_fp[:16]}, but the model was evaluated on {info.test_fingerprint[:16]}; "
                        "export from the workspace the model was trained in (--workspace)")
    return PreparedData(train=frozen.datasets["train"], validation=frozen.datasets["validation"], test=test, labels=frozen.labels,
                        fingerprint=frozen.fingerprint, test_fingerprint=test_fp, directory=found, report={}, reused=True,
                        task=cfg.task, multitask=cfg.data.task_column is not None)


def _config(ref: str, info: Manifest) -> TunekitConfig:
    if info.config is None:
        raise ModelError(f"{ref}: its tunekit.json records no config, so neither its primary metric nor its test split is known; "
                         "export a model trained by `tunekit run`")
    try:
        return TunekitConfig.from_dump(info.config)
    except ValidationError as exc:
        raise ConfigError(f"{ref}: its recorded config is not valid for this tunekit version ({exc.error_count()} problem(s), first: "
                          f"{exc.errors()[0]['msg']}); export it with the tunekit version that trained it") from None


def _merged(trained):
    """The classifier with LoRA-family weights folded into the base (a plain encoder graph), or itself when there is no adapter."""
    if not hasattr(trained.model, "merge_and_unload"):
        return trained
    from dataclasses import replace

    return replace(trained, model=trained.model.merge_and_unload().eval())


def _score(model, data, cfg: TunekitConfig) -> tuple[dict, np.ndarray]:
    """Test metrics and outputs (class probabilities, or values) as evaluation computes them."""
    from tunekit.evaluate import score

    return score(model, data, cfg.train.eval_batch_size)


def _parity(cfg, info, data, settings, torch_metrics, torch_out, onnx_metrics, onnx_out) -> onnx.OnnxParity:
    """Both runtimes' primary metric with the paired bootstrap interval of their difference, and the largest output difference."""
    from tunekit.evaluate import stats

    primary = cfg.eval.primary
    numeric = task_kinds.kind(info.task).numeric
    if numeric:
        from tunekit.evaluate.metrics import REGRESSION_FNS
        from tunekit.evaluate.regression import targets

        y, a, b, fn = targets(data.test), torch_out, onnx_out, REGRESSION_FNS[primary]
        out_diff = float(np.abs(onnx_out - torch_out).max() / (info.target.std if info.target else 1.0))
        agreement = 1.0
    else:
        from tunekit.evaluate.metrics import classification_metrics

        y, a, b = np.asarray(list(data.test["label"])), torch_out.argmax(1), onnx_out.argmax(1)
        fn = stats.PAIRED_METRICS.get(primary) or (lambda t, p: classification_metrics(t, p, data.labels)[primary])
        out_diff = float(np.abs(onnx_out - torch_out).max())
        agreement = float(np.mean(a == b))
    paired = stats.paired_bootstrap(y, a, b, fn, settings.bootstrap_resamples, seed=cfg.train.seed)
    diff = float(onnx_metrics[primary] - torch_metrics[primary])
    return onnx.OnnxParity(rows=len(y), test_fingerprint=data.test_fingerprint, metric=primary, torch=float(torch_metrics[primary]),
                           onnx=float(onnx_metrics[primary]), diff=diff, low=paired["low"], high=paired["high"],
                           metric_drop=(diff if lower_is_better(primary) else -diff) + 0.0, max_metric_drop=settings.max_metric_drop,
                           max_output_diff=out_diff,
                           max_output_diff_allowed=settings.max_value_diff if numeric else settings.max_probability_diff,
                           output="value" if numeric else "probability", agreement=agreement)


def _refuse_outside_tolerance(ref: str, p: onnx.OnnxParity, settings: OnnxExportSettings) -> None:
    problems = []
    if p.metric_drop > p.max_metric_drop:
        problems.append(f"{p.metric} drops by {p.metric_drop:.4f} (ONNX {p.onnx:.4f}, PyTorch {p.torch:.4f}, difference {p.diff:+.4f}, "
                        f"95% interval [{p.low:+.4f}, {p.high:+.4f}]; allowed: max_metric_drop {p.max_metric_drop:g})")
    if p.max_output_diff > p.max_output_diff_allowed:
        what, option = (("a predicted value differs by", "max_value_diff") if p.output == "value"
                        else ("a class probability differs by", "max_probability_diff"))
        problems.append(f"{what} up to {p.max_output_diff:.4f} (allowed: {option} {p.max_output_diff_allowed:g})")
    if problems:
        raise ModelError(f"{ref}: the {settings.quantization} ONNX export does not answer like the PyTorch model on the frozen test split "
                         f"({p.rows} rows): {'; '.join(problems)}. Nothing was kept. Try --quantize f32 or --per-channel, or, if the "
                         "difference is acceptable, raise the tolerance (--max-metric-drop, --max-probability-diff, --max-value-diff).")

