"""ONNX Runtime for encoder classifiers and regressors: write the graph, quantise it, load it to serve.

Why: on a CPU, ONNX Runtime with int8 weights (dynamic quantisation: weights stored as int8,
activations quantised per batch at run time) runs an encoder's forward pass faster than PyTorch
in float32, with a file a quarter of the size. The graph comes from PyTorch's own exporter
(``torch.onnx.export(dynamo=True)``, built on ``torch.export``: the maintained one), the int8
weights from ``onnxruntime.quantization.quantize_dynamic``.

Where it lives: ``MODEL_DIR/onnx/`` holds ``model.onnx`` and ``export.json`` (an ``OnnxExport``: the
file's sha256, how it was made and the parity check it passed), beside the weights it was made
from, so ``tunekit serve --model NAME@champion --runtime onnx`` finds it from the same reference.
The tokenizer and ``tunekit.json`` stay the model folder's own.

How it serves: ``load_onnx`` returns the same ``TrainedModel`` as ``load_trained``, with an
``OnnxSequenceClassifier`` in place of the PyTorch module. It answers the one call
``models.predict_proba`` / ``predict_values`` make (token tensors in, ``.logits`` out), so the
tokenisation, length-sorted batching, temperature, label order and regression scaling stay the one
implementation both runtimes share; only the matrix products differ. Writing the export and
checking its parity on the frozen test split is ``tunekit.pipeline.export_onnx``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunekit import task_kinds
from tunekit.artifacts import Manifest, package_versions
from tunekit.errors import ModelError

__all__ = ["EXPORT_DIR", "EXPORT_RECORD", "MODEL_FILE", "OnnxExport", "OnnxParity", "OnnxSequenceClassifier",
           "check_exportable", "export_dir", "file_sha256", "load_onnx", "now", "onnx_model", "read_export", "versions", "write_onnx"]

EXPORT_DIR = "onnx"            # MODEL_DIR/onnx/: the export, beside the weights it was made from
MODEL_FILE = "model.onnx"
EXPORT_RECORD = "export.json"
INSTALL_HINT = "pip install onnxruntime onnx onnxscript"
OPSET = 18  # the exporter's default opset in torch 2.x; recorded with the export


class OnnxParity(BaseModel):
    """How the ONNX export answered the frozen test split beside the PyTorch model it came from."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(description="Test rows both runtimes answered (the rows the model was evaluated on).")
    test_fingerprint: str | None = Field(None, description="Fingerprint of those rows.")
    metric: str = Field(description="The primary metric (`eval.primary` of the model's config).")
    torch: float = Field(description="The PyTorch model's primary metric on the rows.")
    onnx: float = Field(description="The ONNX export's primary metric on the rows.")
    diff: float = Field(description="ONNX minus PyTorch, in the metric's units.")
    low: float = Field(description="Lower end of the paired bootstrap interval of `diff`.")
    high: float = Field(description="Upper end of the paired bootstrap interval of `diff`.")
    confidence: float = Field(0.95, description="Confidence of the interval.")
    metric_drop: float = Field(description="How much worse the ONNX export is on the metric (`diff` with the sign of 'worse'); negative when it is better.")
    max_metric_drop: float = Field(description="The largest drop allowed.")
    output: Literal["probability", "value"] = Field(description="What `max_output_diff` measures: a class probability (classification) or a predicted value (regression).")
    max_output_diff: float = Field(description="Classification: the largest difference of one class probability on one row; regression: of one predicted value, in standard deviations of the training target.")
    max_output_diff_allowed: float = Field(description="The largest output difference allowed.")
    agreement: float = Field(description="Classification: the share of rows whose predicted label is the same in both runtimes; regression: 1.")


class OnnxExport(BaseModel):
    """``MODEL_DIR/onnx/export.json``: what the ONNX file is, how it was made, and the check it passed."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(MODEL_FILE, description="The ONNX file, in this folder.")
    sha256: str = Field(description="sha256 of the file, checked when the server loads it.")
    quantization: Literal["int8", "f32"] = Field(description="`int8`: dynamic quantisation (int8 weights, activations quantised at run time); `f32`: float32 as exported.")
    per_channel: bool = Field(False, description="int8 weights quantised per output channel rather than per tensor.")
    opset: int = Field(OPSET, description="ONNX opset of the graph.")
    exporter: str = Field("torch.onnx.export(dynamo=True)", description="What wrote the graph.")
    inputs: list[str] = Field(description="The graph's inputs, names of the tokenizer's outputs (`input_ids`, `attention_mask`, ...).")
    outputs: int = Field(description="Logits per row: the number of labels (1 for regression).")
    merged: bool = Field(description="LoRA-family weights were folded into the base before export.")
    versions: dict[str, str] = Field(default_factory=dict, description="torch, onnx, onnxscript and onnxruntime versions at export.")
    created_at: str = Field(description="When the export was written (ISO 8601, UTC).")
    parity: OnnxParity = Field(description="The parity check on the frozen test split.")


def export_dir(model_dir: str | Path) -> Path:
    """Where the ONNX export of ``model_dir`` lives (whether or not it exists yet)."""
    return Path(model_dir) / EXPORT_DIR


def check_exportable(model_dir: Path, info: Manifest) -> None:
    """``ModelError`` for a model ONNX export does not take: a generation model, or an adapter whose
    method keeps virtual tokens outside the weights (nothing to fold into a plain encoder graph)."""
    from tunekit.methods import MERGEABLE

    if task_kinds.kind(info.task).causal:
        raise ModelError(f"{model_dir}: a {info.task} model; ONNX export takes encoder classifiers and regressors "
                         "(for a generation model use `tunekit export MODEL --format gguf` or `--format merged`)")
    if (model_dir / "adapter_config.json").is_file() and info.method not in MERGEABLE:
        raise ModelError(f"{model_dir}: method {info.method} keeps virtual tokens outside the weights, so it cannot become a plain "
                         f"encoder graph; ONNX export takes full checkpoints and the mergeable methods: {', '.join(sorted(MERGEABLE))}")


def write_onnx(model, tokenizer, max_length: int, pairs: bool, out_file: Path, quantization: str = "int8",
               per_channel: bool = False) -> list[str]:
    """Export ``model`` (a transformers sequence classifier, adapter already merged) to ``out_file``,
    int8-quantised unless ``quantization`` is ``f32``; returns the graph's input names.

    Batch size and sequence length are dynamic; the sample the exporter traces has two rows of
    different lengths, so neither dimension is taken for a constant."""
    _require_onnx()
    sample = ["a short text", "a somewhat longer text to trace the export with"]
    batch = dict(tokenizer(sample, sample if pairs else None, truncation=True, max_length=max_length, padding=True, return_tensors="pt"))
    names = list(batch)
    unknown = [n for n in names if n not in _LogitsOnly.NAMES]
    if unknown:
        raise ModelError(f"the tokenizer gives {', '.join(unknown)} besides {', '.join(_LogitsOnly.NAMES)}; ONNX export takes encoders "
                         "whose tokenizers give only those")
    batch_dim, seq_dim = torch.export.Dim("batch"), torch.export.Dim("sequence")
    model = model.float().eval()
    with tempfile.TemporaryDirectory(prefix="tunekit-onnx-") as tmp, _quiet_exporter(), torch.inference_mode(False):
        float_file = out_file if quantization == "f32" else Path(tmp) / "float.onnx"
        program = torch.onnx.export(_LogitsOnly(model).eval(), (), kwargs=batch, dynamo=True, opset_version=OPSET,
                                    dynamic_shapes={k: {0: batch_dim, 1: seq_dim} for k in names},
                                    input_names=names, output_names=["logits"], verbose=False)
        program.save(str(float_file))
        if quantization == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(float_file), str(out_file), weight_type=QuantType.QInt8, per_channel=per_channel)
    return names


class _LogitsOnly(torch.nn.Module):
    """The classifier with the tokenizer's tensors as named inputs and the logits as its one output:
    what the graph holds. ``torch.export`` needs the arguments spelt out (no ``**kwargs``)."""

    NAMES = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, **{k: v for k, v in given.items() if v is not None}).logits


@contextmanager
def _quiet_exporter():
    """The exporter and the quantiser log progress and advice (torchvision missing, pre-processing)
    on the root logger and warn about axis names; tunekit's caller reports the outcome instead."""
    import warnings

    loggers = [logging.getLogger(), logging.getLogger("torch.onnx"), logging.getLogger("torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """The exporter's and runtime's versions, recorded with each export."""
    return package_versions(("torch", "onnx", "onnxscript", "onnxruntime"))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_export(folder: Path, model_ref: str | None = None) -> OnnxExport:
    """The ``export.json`` of an ONNX export folder; ``ModelError`` naming the export command when there is none."""
    record = folder / EXPORT_RECORD
    if not record.is_file():
        ref = model_ref or str(folder.parent)
        raise ModelError(f"{ref}: no ONNX export (looked for {record}); write one with `tunekit export {ref} --format onnx` "
                         "(it checks parity on the model's frozen test split), or serve with --runtime torch")
    try:
        return OnnxExport.model_validate_json(record.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise ModelError(f"{record}: not a readable ONNX export record ({type(exc).__name__}); delete {folder} and export again "
                         f"with `tunekit export {model_ref or folder.parent} --format onnx`") from None


class OnnxSequenceClassifier:
    """An ONNX Runtime session behind the one call ``models.predict_proba`` makes on a classifier:
    token tensors in (by the tokenizer's names), an object with ``.logits`` out. ``config.num_labels``,
    ``training``, ``eval()`` and ``train(False)`` are there because that function asks for them."""

    training = False

    def __init__(self, session, outputs: int):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.config = SimpleNamespace(num_labels=outputs)

    def eval(self) -> OnnxSequenceClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxSequenceClassifier:
        if mode:
            raise ModelError("an ONNX export only predicts; train the PyTorch model and export it again")
        return self

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise ModelError(f"the ONNX graph takes {', '.join(self.input_names)} but the tokenizer gave no {', '.join(missing)}; "
                             "the export does not belong to this tokenizer: export the model again")
        feeds = {n: batch[n].detach().cpu().numpy().astype("int64", copy=False) for n in self.input_names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))


def load_onnx(model_dir: str | Path, folder: Path | None = None, threads: int | None = None, model_ref: str | None = None):
    """The model in ``model_dir`` as a ``TrainedModel`` answering through its ONNX export (``folder``,
    default ``MODEL_DIR/onnx``), with the model folder's tokenizer and manifest. The file's sha256 is
    checked against ``export.json``: the served graph is the one that passed the parity check.
    ``threads``: intra-op threads (default: torch's, so both runtimes get the same cores)."""
    model_dir = Path(model_dir)
    folder = folder or export_dir(model_dir)
    record = read_export(folder, model_ref)
    info = Manifest.read(model_dir)
    check_exportable(model_dir, info)
    path = folder / record.file
    if not path.is_file() or file_sha256(path) != record.sha256:
        why = "is missing" if not path.is_file() else "does not match the sha256 in export.json (changed since it passed the parity check)"
        raise ModelError(f"{path} {why}; delete {folder} and export again with `tunekit export {model_ref or model_dir} --format onnx`")
    return onnx_model(model_dir, path, record.outputs, threads, info)


def onnx_model(model_dir: Path, path: Path, outputs: int, threads: int | None = None, info: Manifest | None = None):
    """A ``TrainedModel`` answering through the ONNX file ``path``, with ``model_dir``'s tokenizer and
    manifest: what ``load_onnx`` serves, and what the export's parity check scores before any record exists."""
    from transformers import AutoTokenizer

    from tunekit.models import TrainedModel

    session = _session(path, threads)
    return TrainedModel(model=OnnxSequenceClassifier(session, outputs), tokenizer=AutoTokenizer.from_pretrained(model_dir),
                        info=info or Manifest.read(model_dir), path=Path(model_dir), device=torch.device("cpu"))


def _session(path: Path, threads: int | None):
    ort = _require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # one graph at a time; parallelism is inside each matrix product
    # ORT's threads spin between ops by default. A server shares its cores with the event loop, the
    # request log and other processes; spinning took their time and made batched ONNX forward passes
    # about 3x slower on a busy 2-core machine (bench/serve.py). Sleeping threads cost almost nothing idle.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _require_onnx() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(f"the ONNX runtime needs onnxruntime (and, to export, onnx and onnxscript): {INSTALL_HINT}") from None
    return onnxruntime

