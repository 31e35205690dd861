"""Registry commands: list, history, promote and roll back registered model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tunekit.cli.common import (
    JsonOpt,
    TrackingOpt,
    console,
    ms_to_str,
    print_rows,
    registry_app,
    tracking,
)


@registry_app.command("list")
def registry_list(name: Annotated[str | None, typer.Argument(help="Registered model; all models when omitted.")] = None,
                  tracking_uri: TrackingOpt = None, as_json: JsonOpt = False) -> None:
    """List registered models, or the versions of one with their aliases and metrics."""
    from tunekit import registry

    mlc = registry.client(tracking(tracking_uri))
    if name is None:
        rows = [{"model": rm.name, "versions": len(mlc.search_model_versions(f"name = '{rm.name}'")),
                 "aliases": ", ".join(f"{a}=v{v}" for a, v in (rm.aliases or {}).items())} for rm in mlc.search_registered_models()]
        print_rows(Table("model", "versions", "aliases"), rows, as_json)
        return
    rows = []
    for mv in registry.list_versions(mlc, name):  # MLflow 3 gives the version as an int: every cell is made a string
        tags = mv.tags or {}
        primary = tags.get("primary_metric", "")
        rows.append({"version": str(mv.version), "aliases": ", ".join(mv.aliases or []), "primary_metric": primary,
                     "test": _number(tags.get(f"test_{primary}")), "baseline": _number(tags.get(f"baseline_{primary}")),
                     "created": ms_to_str(mv.creation_timestamp), "run": mv.run_id or ""})
    print_rows(Table("version", "aliases", "primary metric", "test", "baseline", "created (UTC)", "run"), rows, as_json)


def _number(tag: str | None) -> float | None:
    """A metric recorded as a tag, as a number rounded for reading (tags are strings)."""
    return None if tag in (None, "") else round(float(tag), 4)


@registry_app.command("history")
def registry_history(name: Annotated[str, typer.Argument(help="Registered model.")], tracking_uri: TrackingOpt = None,
                     as_json: JsonOpt = False) -> None:
    """Every registration, promotion, demotion and rollback of a model, oldest first."""
    from tunekit import registry

    rows = [{"at": e["at"].replace("T", " ")[:19], "version": e["version"], "event": e["action"], "by": e["by"], "why": e["reason"]}
            for e in registry.history(registry.client(tracking(tracking_uri)), name)]
    print_rows(Table("when (UTC)", "version", "event", "by", "why"), rows, as_json)


@registry_app.command("promote")
def registry_promote(name: Annotated[str, typer.Argument(help="Registered model.")],
                     version: Annotated[str, typer.Argument(help="Version to make champion.")],
                     reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "manual promotion",
                     tracking_uri: TrackingOpt = None) -> None:
    """Make a version the champion by hand (bypasses the gate; the reason is recorded)."""
    from tunekit import registry

    mlc = registry.client(tracking(tracking_uri))
    prev = registry.promote(mlc, name, version, reason)
    console.print(f"{name} v{version} is now champion" + (f" (was v{prev})" if prev else ""))
    _restamp(mlc, name, version, "champion", f"promoted by hand: {reason}")
    if prev:
        _restamp(mlc, name, prev, "none", f"replaced as champion by v{version} ({reason})")


@registry_app.command("rollback")
def registry_rollback(name: Annotated[str, typer.Argument(help="Registered model.")],
                      reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "manual rollback",
                      tracking_uri: TrackingOpt = None) -> None:
    """Give the champion alias back to the version the current champion replaced."""
    from tunekit import registry

    mlc = registry.client(tracking(tracking_uri))
    old, new = registry.rollback(mlc, name, reason)
    console.print(f"{name}: champion rolled back from v{old} to v{new}")
    _restamp(mlc, name, new, "champion", f"champion again by rollback: {reason}")
    _restamp(mlc, name, old, "none", f"rolled back to v{new} ({reason})")


def _restamp(mlc, name: str, version: str, alias: str, why: str) -> None:
    """Bring the version's report card (in its run folder, when on this machine) up to date with its new alias."""
    from tunekit.report import markdown as card_report

    run_dir = (mlc.get_model_version(name, str(version)).tags or {}).get("run_dir")
    if run_dir and card_report.restamp(Path(run_dir), alias, why):
        console.print(f"Updated the report card of v{version}: {Path(run_dir) / 'report.html'}", highlight=False)
