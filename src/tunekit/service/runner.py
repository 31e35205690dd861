"""A fine-tuning job as a tunekit run: the same lifecycle ``tunekit run`` goes through, in a worker.

``execute`` claims a queued job, writes its config (``WORKSPACE/service/jobs/ID/config.yaml``: the
run can be repeated from the command line with ``tunekit run`` on it), and runs ``pipeline.run``:
data report, baseline, training, evaluation, registration and gate. What a user sees in the
terminal becomes the job's events (one per console line); each optimisation step is a ``metrics``
event, each epoch a checkpoint entry. The run's id is the job's id, so a job whose worker died
continues from its last checkpoint (``pipeline.run(resume=...)``) when it runs again.

A cancel or pause request is seen between two steps (or two progress updates outside training):
the listener raises ``Stopped``, training ends within a step, the job is ``cancelled`` (or
``paused``, to be resumed later from its checkpoint).

What a job runs besides its hyperparameters (method, sequence length, evaluation size) is
``JOB_DEFAULTS``, overridden by an admin's ``WORKSPACE/service/job_defaults.yaml`` (any config keys,
nested as in a config file).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import threading
import time
import traceback

import yaml
from rich.console import Console

from tunekit import progress
from tunekit.artifacts import Workspace
from tunekit.errors import TunekitError
from tunekit.service.catalogue import Catalogue
from tunekit.service.jobs import Job, JobStore, ft_model_id, resolve_hyperparameters

__all__ = ["JOB_DEFAULTS", "execute", "job_config"]

logger = logging.getLogger("tunekit.service")
TASKS = {"supervised": "generation", "dpo": "preference"}  # OpenAI's method -> tunekit's task
HEARTBEAT_S = 2.0
CHECK_REQUESTS_S = 0.5
JOB_DEFAULTS: dict = {
    "method": {"kind": "lora"},
    "model": {"max_length": 512},
    "data": {"overlength": "truncate", "split": {"validation": 0.1, "test": 0.2}},
    "train": {"checkpoint_every": 5, "early_stopping_patience": 0},
    "eval": {"max_test_rows": 100, "bootstrap_resamples": 200},
}


class Stopped(Exception):
    """Raised from inside training when the job's cancel or pause was requested."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def execute(workspace: Workspace, job_id: str) -> None:
    """Run one job to its end (or to a cancel, pause or failure), keeping its row and events current."""
    store = JobStore(workspace)
    job = store.claim(job_id)
    if job is None:
        return  # cancelled or paused while queued, or another worker took it
    beat = _heartbeat(store, job_id)
    try:
        _run(workspace, store, job)
    except Stopped as stop:
        if stop.what == "cancel":
            store.set(job_id, status="cancelled", finished_at=int(time.time()), requested=None, estimated_finish=None)
            store.event(job_id, "Job cancelled")
        else:
            store.set(job_id, status="paused", requested=None, estimated_finish=None)
            store.event(job_id, "Job paused; resume it to continue from its last checkpoint")
    except TunekitError as exc:
        _fail(store, job_id, "invalid_training_file" if type(exc).__name__ == "DataError" else "job_failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the job ends failed with the reason, never stuck running
        logger.exception("job %s failed", job_id)
        _fail(store, job_id, "internal_error", f"{type(exc).__name__}: {exc} (the worker log has the traceback)",
              traceback.format_exc(limit=5))
    finally:
        beat.set()


def _run(workspace: Workspace, store: JobStore, job: Job) -> None:
    from tunekit import pipeline

    folder = workspace.service / "jobs" / job.id
    run_dir = workspace.run(job.id)
    resume = (run_dir / "checkpoint.pt").is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # started before without reaching a checkpoint: start over
    cfg, hyper = job_config(workspace, job, folder)
    store.set(job.id, hyperparameters={**json.loads(job.row["hyperparameters"]), **hyper})
    store.event(job.id, f"Continuing from the last checkpoint (attempt {job.attempts})" if resume else "Fine-tuning job started")
    # soft_wrap: a sentence stays one event however long it is (tables and headings still fit 120 columns)
    console = Console(file=_EventLines(store, job.id), width=120, soft_wrap=True, force_terminal=False, no_color=True, highlight=False)
    with progress.listen(_Listener(store, job.id)):
        outcome = pipeline.run(cfg, console, resume=job.id if resume else None, run_id=job.id)
    model = ft_model_id(job.model, job.project, job.suffix, job.id)
    result = _result_file(workspace, job, outcome.trained.history if outcome.trained else [])
    store.set(job.id, status="succeeded", finished_at=int(time.time()), fine_tuned_model=model, estimated_finish=None,
              trained_tokens=outcome.trained.trained_tokens if outcome.trained else None, result_files=[result] if result else [],
              registered={"name": cfg.name, "version": outcome.version, "alias": outcome.decision.alias})
    store.event(job.id, f"New fine-tuned model created: {model} (registered as {cfg.name} version {outcome.version}, "
                        f"{outcome.decision.alias}: {outcome.decision.primary} {outcome.decision.candidate:.4f} against the baseline's "
                        f"{outcome.decision.baseline:.4f})", data={"registry": f"{cfg.name}/{outcome.version}", "alias": outcome.decision.alias})
    store.event(job.id, "The job has successfully completed")


def job_config(workspace: Workspace, job: Job, folder):
    """The job's tunekit config, written to ``folder/config.yaml``, and the hyperparameters it resolved to."""
    from tunekit.config import GENERATION_LEARNING_RATE, load_config
    from tunekit.service.files import FileStore

    files = FileStore(workspace)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": str(_copy(files, job.project, job.training_file, folder / "train.jsonl"))}
    if job.validation_file:
        data["validation"] = str(_copy(files, job.project, job.validation_file, folder / "validation.jsonl"))
    examples = sum(1 for line in (folder / "train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    method = json.loads(job.row["method"])["type"]
    sent = {k: v for k, v in json.loads(job.row["hyperparameters"]).items() if v != "auto"}
    hyper = resolve_hyperparameters(sent, examples, method)
    raw = _merge(JOB_DEFAULTS, _admin_defaults(workspace))
    kind = raw["method"].get("kind", "lora")
    if method == "dpo":  # DPO against the starting model, with the job's beta
        raw = _merge(raw, {"preference": {"loss": "dpo", "beta": hyper["beta"]}})
    raw = _merge(raw, {
        "name": f"{job.project}-{job.model}" + (f"-{job.suffix}" if job.suffix else ""), "task": TASKS[method],
        "workspace": str(workspace.root.resolve()), "data": {**data, "split": {"seed": job.seed % 10_000}},
        "model": {"base": Catalogue(workspace).get(job.model).ref},
        "train": {"epochs": hyper["n_epochs"], "batch_size": hyper["batch_size"], "seed": job.seed,
                  "learning_rate": GENERATION_LEARNING_RATE[kind] * hyper["learning_rate_multiplier"]},
    })
    (folder / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(folder / "config.yaml"), hyper


def _copy(files, project: str, file_id: str, dest):
    shutil.copyfile(files.path(project, file_id), dest)
    return dest


def _admin_defaults(workspace: Workspace) -> dict:
    path = workspace.service / "job_defaults.yaml"
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise TunekitError(f"{path}: expected a mapping of config sections (method, model, train, eval, ...), got {type(loaded).__name__}")
    return loaded


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _result_file(workspace: Workspace, job: Job, history: list[dict]) -> str | None:
    """OpenAI's result file: per-epoch metrics as CSV, stored as a file of purpose ``fine-tune-results``."""
    from tunekit.service.files import FileStore

    if not history:
        return None
    columns = sorted({k for row in history for k in row})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return FileStore(workspace).create(job.project, f"{job.id}-results.csv", "fine-tune-results", out.getvalue().encode())["id"]


def _fail(store: JobStore, job_id: str, code: str, message: str, detail: str | None = None) -> None:
    store.set(job_id, status="failed", finished_at=int(time.time()), error={"code": code, "message": message, "param": None},
              requested=None, estimated_finish=None)
    store.event(job_id, f"Job failed: {message}", level="error", data={"traceback": detail} if detail else None)


def _heartbeat(store: JobStore, job_id: str) -> threading.Event:
    """Say every ``HEARTBEAT_S`` that the job's worker is alive, until the returned event is set."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            try:
                store.set(job_id, heartbeat=time.time())
            except Exception:  # noqa: BLE001 - a busy database: the next beat will do
                logger.warning("heartbeat of %s not written", job_id)

    threading.Thread(target=beat, name=f"tunekit-heartbeat-{job_id}", daemon=True).start()
    return done


class _EventLines(io.TextIOBase):
    """A text stream for rich's Console: each finished line becomes one ``message`` event."""

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id, self.buffer = store, job_id, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            message = line.strip().strip("─").strip()
            if message:
                self.store.event(self.job_id, message, level="warn" if message.lower().startswith("warning") else "info")
        return len(text)


class _Listener:
    """Turns the loop's ``step`` and ``epoch`` signals into metrics events and checkpoints, and stops
    the job when a cancel or pause is requested."""

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.checked = 0.0
        self.started = time.time()

    def __call__(self, event: str, **fields) -> None:
        if event == "step":
            step, total = fields["step"], fields["total_steps"]
            self.store.event(self.job_id, f"Step {step}/{total}: training loss={fields['train_loss']:.4f}", type="metrics",
                             data={"step": step, "total_steps": total, "train_loss": round(fields["train_loss"], 6), "epoch": fields["epoch"]})
            elapsed = time.time() - self.started
            self.store.set(self.job_id, estimated_finish=int(time.time() + elapsed / max(step, 1) * (total - step)))
        elif event == "epoch":
            metrics = {"step": fields["step"], "train_loss": fields.get("train_loss"), "valid_loss": fields.get("val_loss"),
                       "full_valid_loss": fields.get("val_loss")}
            if fields.get("checkpointed"):
                self.store.checkpoint(self.job_id, fields["step"], metrics)
        now = time.monotonic()
        if now - self.checked >= CHECK_REQUESTS_S:
            self.checked = now
            requested = self.store.get(None, self.job_id).requested
            if requested:
                raise Stopped(requested)
