"""What every command shares: the typer apps, the consoles, the argument types, config loading,
tables that print whole or as JSON, and options generated from a settings model."""

from __future__ import annotations

import inspect
import json
import os
import sys
import typing
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from tunekit import artifacts


def _console(stderr: bool = False) -> Console:
    """A console that never cuts identifiers: piped or logged output (no terminal) is 200 columns wide
    instead of rich's 80, so fingerprints, ids and table cells print whole (``COLUMNS`` still wins)."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=200 if wide else None)


console = _console()


err_console = _console(stderr=True)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the rows as JSON (one list of objects) for scripts, instead of the table.")]


app = typer.Typer(help="Fine-tune a pretrained language model for your task, beat a baseline, register, serve.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


config_app = typer.Typer(help="Check and describe config files.", no_args_is_help=True)


data_app = typer.Typer(help="Check data, freeze splits, preview conversations, list versions, erase rows.", no_args_is_help=True)


registry_app = typer.Typer(help="List, promote and roll back registered model versions.", no_args_is_help=True)


models_app = typer.Typer(help="Base models: the service's catalogue (add, list, remove) and tiny models for tests and demos.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke the server's API keys.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(registry_app, name="registry")
app.add_typer(keys_app, name="keys")

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: --set train.epochs=2 (repeatable).")]


TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else ./tunekit-workspace/mlflow.db.")]


GATE_FAILED_EXIT = 10
DEFAULT_WORKSPACE = Path(artifacts.DEFAULT_WORKSPACE)


def load(path: Path, sets: list[str] | None = None):
    from tunekit.config import load_config

    overrides = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
        overrides[key] = yaml.safe_load(value)
    return load_config(path, overrides)


def print_rows(table: Table, rows: list[dict], as_json: bool) -> None:
    """Print ``rows`` as JSON or, for people, as ``table`` (whose columns are the rows' keys, in order)."""
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for column in table.columns:
        column.overflow = "fold"  # a long cell wraps onto the next line; it is never cut with an ellipsis
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)


def tracking(uri: str | None) -> str:
    from tunekit.registry import default_tracking_uri

    return uri or default_tracking_uri()


def model_dir(model: str, tracking_uri: str | None) -> Path:
    """A model directory from a path or a registry reference."""
    from tunekit import registry

    return registry.resolve_model(model, tracking(tracking_uri)).path


def ms_to_str(ms: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") if ms else ""


def settings_options(settings: type, rename: dict[str, str] | None = None):
    """A decorator giving a command one option per top-level field of the pydantic ``settings``
    model (``max_wait_ms`` becomes ``--max-wait-ms``), with the field's description and default as
    help. Options left out are None, so a YAML ``--config`` fills them; the command takes them as
    ``**options``. Help and defaults cannot drift from the settings: they are read from them."""
    rename = rename or {}

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)  # real annotations: typer reads __signature__ as it is
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        generated = []
        for name, field in settings.model_fields.items():
            kind = _option_type(field.annotation)
            if kind is None:
                continue  # a nested section (guardrails): YAML only
            flag = rename.get(name, "--" + name.replace("_", "-"))
            decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
            value = None if field.is_required() else field.get_default(call_default_factory=True)
            default = " (required, here or in --config)" if field.is_required() else "" if value is None else f" (default: {value})"
            option = typer.Option(*decls, help=f"{field.description}{default}", show_default=False)
            generated.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]))
        command.__signature__ = signature.replace(parameters=[*own, *generated])
        return command

    return decorate


def _option_type(annotation) -> type | None:
    """The plain type of a settings field for the command line (``str | None`` is ``str``; a
    ``Literal`` is ``str``, checked by the settings model), or None for a nested model."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType) else [annotation]
    kind = args[0]
    if typing.get_origin(kind) is typing.Literal:
        return str
    return kind if kind in (str, int, float, bool) else None
