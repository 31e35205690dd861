"""What a run leaves behind, typed: the ``Manifest`` of every trained-model folder (``tunekit.json``),
the ``Workspace`` (every path under a workspace folder), and the provenance recorded with every
model (git commit of the user's project, package versions); plus the process set-up every tunekit
entry point shares.

Why typed: ``tunekit.json`` is read by the server, the evaluator, export, monitoring and reproduce.
As a raw dict each reader carried its own defaults (``.get("task", "classification")``) and a
folder with a missing or misspelt field failed far from the file, as a ``KeyError``. One pydantic
model states every field once, refuses unknown ones (a typo is an error, not a silently ignored
key), and reports a bad field with the file, the field and what the folder holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunekit.errors import ModelError

__all__ = ["DEFAULT_WORKSPACE", "MANIFEST", "BaseModelRef", "ChatTemplate", "ExportCheck", "Manifest", "MergedFrom",
           "TargetScaling", "Workspace", "git_commit", "package_versions", "quiet_libraries"]

PACKAGES = ("tunekit", "torch", "transformers", "peft", "datasets", "accelerate", "scikit-learn", "mlflow")
MANIFEST = "tunekit.json"
DEFAULT_WORKSPACE = "tunekit-workspace"


# --- the workspace: every path under one folder -----------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """Every path under a workspace folder, named once, so no stage spells ``"serving.db"`` itself.

    Why one class: the server writes ``serving.db`` and ``keys.db``, the monitor and ``retrain``
    read them, ``data forget`` looks into ``mlflow.db``; when each spelt the path on its own, moving
    a file meant finding every copy. The folder itself comes from the config (``cfg.workspace_dir``)
    or a ``--workspace`` option; ``Workspace.default()`` is ``./tunekit-workspace``.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def default(cls) -> Workspace:
        """``./tunekit-workspace`` (relative: it resolves against the directory tunekit runs in)."""
        return cls(Path(DEFAULT_WORKSPACE))

    @property
    def mlflow_db(self) -> Path:
        """MLflow's tracking store and model registry (SQLite), the default ``tracking_uri``."""
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        """The SQLite tracking URI of ``mlflow_db`` (absolute, so it means the same from any directory)."""
        return f"sqlite:///{self.mlflow_db.absolute()}"

    @property
    def artifacts(self) -> Path:
        """MLflow's artifact store when tracking is the workspace's SQLite file (adapters, report cards)."""
        return self.root / "artifacts"

    @property
    def datasets(self) -> Path:
        """Frozen splits, one folder per data fingerprint, and the data changelog."""
        return self.root / "datasets"

    def dataset(self, fingerprint: str) -> Path:
        """The frozen splits of one data fingerprint (folders are named by its first 16 characters)."""
        return self.datasets / fingerprint[:16]

    @property
    def runs(self) -> Path:
        """One folder per ``tunekit run``: baseline, adapter, report card."""
        return self.root / "runs"

    def run(self, run_id: str) -> Path:
        return self.runs / run_id

    @property
    def serving_db(self) -> Path:
        """The server's request log and feedback (SQLite, WAL); read by the monitor and ``retrain``."""
        return self.root / "serving.db"

    @property
    def service(self) -> Path:
        """Service mode (``tunekit serve`` without ``--model``): ``service.db`` (files, jobs, events,
        evals, the base-model catalogue), ``files/`` (uploaded files by content hash), ``jobs/`` (one
        folder per fine-tuning job) and ``queue.db`` (the job queue)."""
        return self.root / "service"

    @property
    def service_db(self) -> Path:
        return self.service / "service.db"

    @property
    def keys_db(self) -> Path:
        """API keys (hashed) with their scopes."""
        return self.root / "keys.db"

    @property
    def optuna_db(self) -> Path:
        """Optuna's study storage for ``tunekit tune`` (unless ``tune.storage`` names another)."""
        return self.root / "optuna.db"

    @property
    def tune(self) -> Path:
        """One folder per study of ``tunekit tune``."""
        return self.root / "tune"

    @property
    def compare(self) -> Path:
        """One folder per ``tunekit compare-methods``."""
        return self.root / "compare"

    @property
    def retrain(self) -> Path:
        """One folder per ``tunekit retrain`` (the feedback-extended data files and the run)."""
        return self.root / "retrain"

    @property
    def reproduce(self) -> Path:
        """One folder per ``tunekit reproduce``."""
        return self.root / "reproduce"

    @property
    def monitor(self) -> Path:
        """One folder per ``tunekit monitor`` report."""
        return self.root / "monitor"


# --- the manifest: tunekit.json ---------------------------------------------------------------------


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseModelRef(_Part):
    """The base model an adapter was trained on, as the config named it and as it was found."""

    id: str = Field(description="`model.base` as written in the config: `bundled:minilm`, a folder, or a hub id.")
    resolved: str | None = Field(None, description="What `from_pretrained` was given for it (a folder or hub id); absent in hand-made folders.")
    revision: str | None = Field(None, description="The hub revision (`model.revision`), or null for the default branch.")
    origin: dict[str, Any] | None = Field(None, description="A bundled GGUF base (`bundled:smollm2`): the file, its sha256, its quantisation and the dtype it was de-quantised to; null for other bases.")


class TargetScaling(_Part):
    """Regression: the network learns ``(y - mean) / std``; predictions are mapped back with these."""

    mean: float = Field(description="Mean of the training target.")
    std: float = Field(description="Standard deviation of the training target (1.0 when it was 0).")


class ChatTemplate(_Part):
    """The chat template a generation model was trained with, so every loader renders identically."""

    name: str = Field(description="`chatml`, another named template, or `tokenizer` for the tokenizer's own.")
    chat_template: str = Field(description="The template's Jinja source.")


class MergedFrom(_Part):
    """Where a merged export came from (``tunekit export --merge``)."""

    path: str = Field(description="The adapter folder that was merged.")
    method: str = Field(description="That adapter's method (`lora`, ...).")


class ExportCheck(_Part):
    """The check ``tunekit export --merge`` ran before keeping the merged model."""

    prompts: int = Field(description="How many prompts the merged and the adapter model were compared on.")
    max_abs_logit_diff: float = Field(description="Largest absolute logit difference between them.")
    tolerance: float = Field(description="The largest difference allowed.")


class Manifest(BaseModel):
    """``tunekit.json``: what a trained-model folder is, how to load it, and where it came from.

    Written by the train stage, extended after evaluation (metrics, temperature) and by export.
    Fields a loader cannot do without (task, name, base model, max length) are required; the rest
    have defaults, so folders made before a field existed still load. Unknown fields are refused.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    format_version: int = Field(1, description="Version of this file's layout.")
    task: str = Field(description="`classification`, `regression` or `generation` (a key of `tunekit.task_kinds.KINDS`).")
    name: str = Field(description="The config's `name`; the registered model's name and the name the server reports.")
    method: str | None = Field(None, description="The adaptation method (`lora`, `full`, ...; `full` after a merged export); null for an untouched base model.")
    base_model: BaseModelRef = Field(description="The base model the weights in the folder build on.")
    labels: list[str] = Field(default_factory=list, description="Label names in output order (classification); empty for regression and generation.")
    tasks: dict[str, list[int]] | None = Field(None, description="Multi-task classification: each task's label ids into `labels`; absent for one task.")
    target: TargetScaling | None = Field(None, description="Regression: the training target's mean and std the outputs are scaled back with.")
    max_length: int = Field(description="Token limit inputs are truncated to (generation: of prompt and answer together).")
    pooling: Literal["head", "mean"] = Field("head", description="Classification and regression: what the head reads (`mean`: the mean of the token states; `head`: the architecture's own, e.g. BERT's first token through its pooler). Every loader applies it.")
    text_pair: bool = Field(False, description="The classifier reads sentence pairs (`data.text_pair_column` was set).")
    template: ChatTemplate | None = Field(None, description="Generation: the chat template the model was trained with.")
    system_prompt: str | None = Field(None, description="Generation: the system prompt added to conversations without one.")
    data_fingerprint: str | None = Field(None, description="Fingerprint of the frozen splits the model was trained on.")
    test_fingerprint: str | None = Field(None, description="Fingerprint of the test split alone (comparisons need the same one).")
    config: dict[str, Any] | None = Field(None, description="The resolved config (defaults included) the model was trained with; `reproduce` trains from it.")
    config_hash: str | None = Field(None, description="sha256 of that config.")
    history: list[dict[str, Any]] = Field(default_factory=list, description="One row per epoch: losses, validation metrics, seconds.")
    best_epoch: int | None = Field(None, description="The epoch whose weights were kept.")
    git_commit: str | None = Field(None, description="HEAD of the config's git repository (`-dirty` with uncommitted changes), or null outside one.")
    versions: dict[str, str] = Field(default_factory=dict, description="Versions of tunekit and the packages training depends on.")
    created_at: str | None = Field(None, description="When the folder was written (ISO 8601, UTC).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Headline test metrics, added after evaluation; empty until then.")
    baseline_metrics: dict[str, float] = Field(default_factory=dict, description="Headline test metrics of the best baseline, added after evaluation.")
    temperature: float = Field(1.0, description="Classification: the calibration temperature probabilities are computed with (softmax(logits / T)); 1.0 when none helped.")
    merged_from: MergedFrom | None = Field(None, description="A merged export: the adapter folder and method it was merged from.")
    export_check: ExportCheck | None = Field(None, description="A merged export: the logit check it passed.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from tunekit import task_kinds

        if value not in task_kinds.KINDS:
            raise ValueError(f"{value!r} is not a task tunekit knows; one of {', '.join(task_kinds.KINDS)}")
        return value

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """The manifest of ``folder``; ``ModelError`` naming the file, the field at fault and what the folder holds."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise ModelError(f"{folder}: not a tunekit model directory: {MANIFEST} is missing (found: {_holds(folder)}). "
                             "Train one with `tunekit run CONFIG`, or point at the model folder (the run's `adapter/`).")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: not a readable tunekit manifest ({type(exc).__name__}: {exc}); the model directory is damaged "
                             f"(it holds: {_holds(folder)}). Copy it again from the registry or the run folder, or retrain the model.") from None
        if not isinstance(raw, dict):
            raise ModelError(f"{path}: expected a JSON object, got {type(raw).__name__}; the model directory is damaged "
                             f"(it holds: {_holds(folder)}). Copy it again from the registry or the run folder, or retrain the model.")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(_invalid(path, exc)) from None

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/tunekit.json`` atomically (a temporary file renamed over it), so a reader
        never sees half a file, even when the server reloads while a run writes. Only the fields
        that were set are written (a default is not recorded as if it had been measured), and
        ``format_version`` always, so a later reader can tell this layout from the next one."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format_version": self.format_version, **self.model_dump(mode="json", exclude_unset=True)}, indent=2)
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, folder / MANIFEST)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return folder / MANIFEST

    @classmethod
    def update(cls, folder: str | Path, **fields: Any) -> Manifest:
        """Set ``fields`` in ``folder``'s manifest (e.g. test metrics after evaluation), validated, and write it back."""
        current = cls.read(folder)
        raw = {**current.model_dump(exclude_unset=True), **fields}
        try:
            new = cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(_invalid(Path(folder) / MANIFEST, exc, updating=sorted(fields))) from None
        new.write(folder)
        return new


def _holds(folder: Path) -> str:
    """What a folder holds, for error messages (the first dozen names)."""
    if not folder.is_dir():
        return "no such folder"
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(f".{MANIFEST}."))
    return ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "") if names else "nothing"


def _invalid(path: Path, exc: ValidationError, updating: list[str] | None = None) -> str:
    """One line per bad field: ``field `x`: what is wrong``, then what the folder holds and what to do."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "missing":
            msg = "required, but missing"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown field; the fields are {', '.join(Manifest.model_fields)}" if len(err["loc"]) == 1 else "unknown field"
        else:
            msg = f"{err['msg']}, got {err.get('input')!r}"
        problems.append(f"field `{field}`: {msg}")
    doing = f" (setting {', '.join(updating)})" if updating else ""
    return (f"{path}{doing}: {'; '.join(problems)}. The folder holds: {_holds(path.parent)}. "
            + ("Pass a valid value." if updating else
               "The model directory is incomplete or was edited by hand: fix the field, copy the folder again from the registry "
               "or the run folder, or retrain the model."))


# --- provenance and process set-up -------------------------------------------------------------------


def git_commit(directory: Path) -> str | None:
    """HEAD of the git repository holding ``directory`` (suffixed ``-dirty`` with uncommitted
    changes), or None when it is not in a repository or git is missing."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=directory, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names: tuple[str, ...] | list[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each package in ``names`` ("not installed" when missing)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def quiet_libraries() -> None:
    """Keep the terminal for tunekit's own progress: no per-file weight-loading bars and no
    deprecation notices from one library about another (called by the CLI and worker processes)."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
