"""Registry stage: MLflow tracking, model versions, aliases and the audit trail.

One MLflow run per ``tunekit run`` holds params, metrics, lineage tags and artifacts; the adapter
becomes a version of the registered model named after the task. Aliases carry the state:
``champion`` is what ``NAME@champion`` serves, ``challenger`` marks versions that failed the gate.
Every alias change is appended to the version's ``tunekit.events`` tag (when, who, what, why), so
``tunekit registry history`` needs nothing but MLflow, also on a shared tracking server.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tunekit.artifacts import DEFAULT_WORKSPACE, Workspace
from tunekit.errors import RegistryError
from tunekit.registry.gate import ChampionScore, GateDecision, decide

__all__ = [
    "ChampionScore", "GateDecision", "Resolved", "audit", "champion_version", "client", "decide", "default_tracking_uri", "experiment_id",
    "history", "list_versions", "log_run", "promote", "register", "resolve", "rollback", "rollback_target", "set_alias",
]

EVENTS_TAG = "tunekit.events"


def default_tracking_uri() -> str:
    """Where registry and serve commands look without --tracking-uri: $MLFLOW_TRACKING_URI, else the
    SQLite store of ./tunekit-workspace (the default workspace of a run started here)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or Workspace(Path(DEFAULT_WORKSPACE).resolve()).tracking_uri


def client(tracking_uri: str, workspace: Path | None = None):
    """An MlflowClient on ``tracking_uri``; quiet, and with local artifacts kept in the workspace."""
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def experiment_id(mlc, name: str, workspace: Path | None) -> str:
    exp = mlc.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = Workspace(workspace).artifacts.resolve().as_uri() if workspace and mlc.tracking_uri.startswith("sqlite:") else None
    return mlc.create_experiment(name, artifact_location=location)


def log_run(mlc, name: str, workspace: Path | None, *, params: dict, metrics: dict, tags: dict,
            artifacts: list[tuple[str, Path]], history: list[dict] | None = None) -> str:
    """One MLflow run with everything about a ``tunekit run``; returns the run id."""
    import mlflow

    exp_id = experiment_id(mlc, name, workspace)
    with mlflow.start_run(experiment_id=exp_id, run_name=tags.get("tunekit.run_name")) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for row in history or []:
            mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})
        for dest, path in artifacts:
            if path.is_dir():
                mlflow.log_artifacts(str(path), dest)
            elif path.exists():
                mlflow.log_artifact(str(path), dest or None)
        return run.info.run_id


def register(mlc, name: str, run_id: str, tags: dict) -> str:
    """Create a new version of ``name`` from the run's ``adapter`` artifact; returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        mlc.get_registered_model(name)
    except MlflowException:
        mlc.create_registered_model(name, description=f"tunekit task {name}")
    source = f"{mlc.get_run(run_id).info.artifact_uri}/adapter"
    mv = mlc.create_model_version(name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    _add_event(mlc, name, mv.version, "registered", f"from run {run_id}")
    return str(mv.version)


def champion_version(mlc, name: str):
    """The model version holding the ``champion`` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return mlc.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None


def set_alias(mlc, name: str, version: str, decision: GateDecision, live: bool = False) -> None:
    """Apply a gate decision: ``champion`` when it passed, else ``challenger``. With ``live``
    (``gate.live``) a passing version waits as ``challenger`` for the live decision while there is a champion."""
    if decision.passed and live and champion_version(mlc, name) is not None:
        decision.waits_live = True
        mlc.set_registered_model_alias(name, "challenger", version)
        _add_event(mlc, name, version, "challenger", f"passed the offline gate, waits for the live decision (gate.live): {'; '.join(decision.reasons)}")
    elif decision.passed:
        promote(mlc, name, version, reason=decision.summary())
    else:
        mlc.set_registered_model_alias(name, "challenger", version)
        _add_event(mlc, name, version, "challenger", decision.summary())


def promote(mlc, name: str, version: str, reason: str, by: str | None = None) -> str | None:
    """Make ``version`` the champion; returns the version it replaced (None if there was none).
    ``by`` names who did it in the audit trail (default: $TUNEKIT_USER, else the login name)."""
    who = {"by": by} if by else {}
    _version(mlc, name, version)
    previous = champion_version(mlc, name)
    prev = str(previous.version) if previous else None
    if prev == str(version):
        raise RegistryError(f"{name} v{version} is already the champion")
    mlc.set_registered_model_alias(name, "champion", str(version))
    current = _version(mlc, name, version)
    if "challenger" in (current.aliases or []):
        mlc.delete_registered_model_alias(name, "challenger")
    _add_event(mlc, name, version, "promoted", reason, replaced=prev, **who)
    if prev:
        _add_event(mlc, name, prev, "demoted", f"replaced by v{version}", **who)
    return prev


def rollback_target(mlc, name: str) -> tuple[str, str]:
    """(the current champion, the version a rollback gives ``champion`` back to), changing nothing;
    ``RegistryError`` when there is no champion or it replaced none. The console shows it before asking."""
    current = champion_version(mlc, name)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back from (see `tunekit registry list {name}`)")
    promoted = [e for e in _events(current) if e["action"] == "promoted"]
    target = promoted[-1].get("replaced") if promoted else None
    if not target:
        raise RegistryError(f"{name} v{current.version} did not replace an earlier champion, so there is nothing to roll back to; "
                            f"use `tunekit registry promote {name} VERSION` to pick one")
    return str(current.version), str(target)


def rollback(mlc, name: str, reason: str = "rollback", by: str | None = None) -> tuple[str, str]:
    """Give ``champion`` back to the version the current champion replaced; returns (from, to)."""
    who = {"by": by} if by else {}
    old, target = rollback_target(mlc, name)
    current = _version(mlc, name, old)
    # the restored champion inherits what it replaced the first time, so rollbacks walk back
    # through earlier champions instead of toggling between the last two
    earlier = [e for e in _events(_version(mlc, name, target)) if e["action"] == "promoted"]
    mlc.set_registered_model_alias(name, "champion", target)
    _add_event(mlc, name, target, "promoted", f"{reason} (rolled back from v{current.version})",
               replaced=earlier[-1].get("replaced") if earlier else None, **who)
    _add_event(mlc, name, str(current.version), "rolled_back", reason, **who)
    return str(current.version), target


def audit(mlc, name: str, version: str, action: str, reason: str, **extra) -> None:
    """Append an event to ``version``'s audit trail without moving an alias: a live decision that
    keeps collecting data, a canary stopped for being worse, a deployment switched. ``tunekit
    registry history`` lists these beside promotions."""
    _add_event(mlc, name, str(version), action, reason, **extra)


def list_versions(mlc, name: str) -> list:
    if not mlc.search_registered_models(filter_string=f"name = '{name}'"):
        names = [m.name for m in mlc.search_registered_models()]
        raise RegistryError(f"no registered model {name!r}; registered: {', '.join(names) or 'none yet (run `tunekit run CONFIG`)'}")
    found = mlc.search_model_versions(f"name = '{name}'")
    # search results carry no aliases in MLflow 3; fetching each version does
    return [mlc.get_model_version(name, str(v)) for v in sorted(int(v.version) for v in found)]


def history(mlc, name: str) -> list[dict]:
    """Every registry event of every version of ``name``, oldest first."""
    events = [dict(e, version=str(v.version)) for v in list_versions(mlc, name) for e in _events(v)]
    return sorted(events, key=lambda e: (e["at"], int(e["version"])))


@dataclass
class Resolved:
    """A model reference turned into a local directory (``version`` None: a folder given by path)."""

    path: Path
    name: str | None
    version: str | None
    alias: str | None


def resolve_model(ref: str, tracking_uri: str | None = None) -> Resolved:
    """The one way to turn what a user types for a model into a local directory: a folder path, or
    ``NAME@ALIAS`` / ``NAME/VERSION`` in the registry at ``tracking_uri`` (default: the registry's
    own default). A path that looks like one but does not exist is an error saying so."""
    path = Path(ref).expanduser()
    if path.exists():
        return Resolved(path=path, name=None, version=None, alias=None)
    if ref.startswith((".", "/", "~")):
        from tunekit.errors import ModelError

        raise ModelError(f"model {ref!r}: no such folder; give a tunekit model directory or a registry reference (NAME@ALIAS, NAME/VERSION)")
    return resolve(ref, tracking_uri or default_tracking_uri())


_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")


def resolve(ref: str, tracking_uri: str, cache_dir: Path | None = None) -> Resolved:
    """``NAME@ALIAS`` or ``NAME/VERSION`` to a local adapter directory (downloaded if remote)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    match = _REF.match(ref)
    if not match:
        raise RegistryError(f"model reference {ref!r} is neither a folder nor NAME@ALIAS / NAME/VERSION (e.g. banking77-intent@champion)")
    mlc = client(tracking_uri)
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        mv = mlc.get_model_version_by_alias(name, alias) if alias else mlc.get_model_version(name, version)
    except MlflowException:
        known = ", ".join(f"v{v.version}{'@' + ','.join(v.aliases) if v.aliases else ''}" for v in _safe_versions(mlc, name))
        if known and alias:
            raise RegistryError(f"{ref}: {name} has no version with the alias {alias!r} (versions: {known}). Use one of them "
                                f"(e.g. {name}/VERSION or {name}@challenger), or make one champion: tunekit registry promote {name} VERSION "
                                "--reason '...'") from None
        raise RegistryError(f"{ref}: not found in the registry at {tracking_uri} (versions of {name}: {known or 'none'}). "
                            "Check the name, or pass --tracking-uri / run from the folder whose workspace holds it.") from None
    source = mv.source
    if source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
    else:
        dest = (cache_dir or Path.home() / ".cache" / "tunekit") / name / str(mv.version)
        path = dest / "adapter" if (dest / "adapter").is_dir() else Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest)))
    return Resolved(path=path, name=name, version=str(mv.version), alias=alias)


def _safe_versions(mlc, name: str) -> list:
    try:
        return list_versions(mlc, name)
    except RegistryError:
        return []


def _version(mlc, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlc.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"{name} has no version {version} (see `tunekit registry list {name}`)") from None


def _events(mv) -> list[dict]:
    return json.loads((mv.tags or {}).get(EVENTS_TAG, "[]"))


def _add_event(mlc, name: str, version: str, action: str, reason: str, **extra) -> None:
    mv = _version(mlc, name, version)
    events = _events(mv)
    events.append({"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "action": action, "reason": reason,
                   "by": os.environ.get("TUNEKIT_USER") or getpass.getuser(), **extra})
    mlc.set_model_version_tag(name, str(version), EVENTS_TAG, json.dumps(events[-40:]))
