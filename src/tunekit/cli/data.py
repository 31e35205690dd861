"""Config, data and base-model commands: config validate/schema/reference, data check/preview/forget/versions, models tiny."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from tunekit.artifacts import Workspace
from tunekit.cli.common import (
    DEFAULT_WORKSPACE,
    ConfigArg,
    JsonOpt,
    SetOpt,
    TrackingOpt,
    config_app,
    console,
    data_app,
    load,
    models_app,
    print_rows,
)
from tunekit.errors import TunekitError


@config_app.command("validate")
def config_validate(config: ConfigArg) -> None:
    """Validate a config file and print it with every default filled in."""
    cfg = load(config)
    console.print(f"[green]{config}: valid[/]")
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), highlight=False, end="")


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema (for editors and CI checks)."""
    from tunekit.config import TunekitConfig

    print(json.dumps(TunekitConfig.model_json_schema(), indent=2))


@config_app.command("reference")
def config_reference() -> None:
    """Print the config reference in Markdown (as in the README)."""
    from tunekit.config import config_reference_markdown

    print(config_reference_markdown())


@data_app.command("check")
def data_check(config: ConfigArg, set_: SetOpt = None) -> None:
    """Read and validate the data, freeze the splits and write the data report (what `tunekit run` does first)."""
    from tunekit import tasks

    cfg = load(config, set_)
    prepared = tasks.get(cfg.task).prepare(cfg, console)
    console.print(f"Data report: {prepared.directory / 'report.md'}")


def _conversations(cfg):
    from tunekit.data import conversations
    from tunekit.models import load_tokenizer, templates

    tokenizer = load_tokenizer(cfg.model.base, cfg.model.revision)
    return conversations.prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template)), tokenizer


@data_app.command("preview")
def data_preview(config: ConfigArg, n: Annotated[int, typer.Option("-n", help="How many training examples to show.")] = 3,
                 set_: SetOpt = None) -> None:
    """Show training examples as the model sees them: the rendered template, trained tokens highlighted."""
    from rich.text import Text

    from tunekit import task_kinds
    from tunekit.data import conversations

    cfg = load(config, set_)
    if not task_kinds.kind(cfg.task).causal:
        raise TunekitError(f"{config}: data preview shows rendered conversations, for task generation; this config's task is {cfg.task}")
    prepared, tokenizer = _conversations(cfg)
    console.print(f"Template [bold]{prepared.template.name}[/]; [reverse green]trained tokens[/] are highlighted "
                  "(the loss covers only these: assistant turns and their end-of-sequence token).")
    for k, pieces in enumerate(conversations.preview(tokenizer, prepared, n), 1):
        enc = prepared.encoded["train"][k - 1]
        console.rule(f"example {k}: {len(enc.ids)} tokens, {enc.trained} trained")
        text = Text()
        for piece, trained in pieces:
            text.append(piece, style="reverse green" if trained else "dim")
        console.print(text)


DataWorkspaceOpt = Annotated[Path, typer.Option("--workspace", help="Workspace folder holding datasets/.")]


@data_app.command("forget")
def data_forget(reason: Annotated[str, typer.Option(help="Why (a request or ticket id); recorded in the changelog.")],
                where: Annotated[str | None, typer.Option(help="Rows to erase: text~=REGEX, text==VALUE, id==VALUE or label==VALUE "
                                                              "(text covers text_pair and every message of a conversation).")] = None,
                ids: Annotated[Path | None, typer.Option(help="File of row ids to erase, one per line.")] = None,
                workspace: DataWorkspaceOpt = DEFAULT_WORKSPACE,
                tracking_uri: TrackingOpt = None) -> None:
    """Erase rows from every stored dataset version, record it, and list the model versions trained on them."""
    from tunekit.data import versions

    result = versions.forget(workspace, where, versions.read_ids(ids) if ids is not None else None, reason,
                             tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    if not result.changed:
        console.print(f"No stored row matches {where if where is not None else f'the ids in {ids}'}; nothing was changed.", highlight=False)
        return
    table = Table("dataset version", "now", "removed (train/validation/test)", "left (train/validation/test)")
    for d in result.datasets:
        table.add_row(d.fingerprint, d.new_fingerprint, "/".join(str(d.removed[s]) for s in ("train", "validation", "test")),
                      "/".join(str(d.remaining[s]) for s in ("train", "validation", "test")))
    console.print(table)
    console.print(f"Erased {result.rows} rows from {len(result.datasets)} dataset versions; recorded in "
                  f"{Workspace(workspace).datasets / versions.CHANGELOG}", highlight=False)
    sources = sorted({s for d in result.datasets for s in d.sources})
    if sources:
        console.print("The source files still hold these rows; remove them there too: " + ", ".join(sources), highlight=False)
    if result.registry is None:
        console.print(f"No registry searched (no {Workspace(workspace).mlflow_db}); pass --tracking-uri to list the model versions trained on these rows")
    elif not result.models:
        console.print("No registered model version was trained on these dataset versions.")
    else:
        models = Table("model", "version", "aliases", "trained on", "run folder")
        for m in result.models:
            models.add_row(m.name, str(m.version), ", ".join(m.aliases), m.data_fingerprint, m.run_dir or "")
        console.print(models)
        console.print("[yellow]These versions were trained on the erased rows:[/] retrain on the current data (`tunekit run CONFIG`), then "
                      "retire them; their run folders and MLflow artifacts still hold predictions on the test rows.")


@data_app.command("versions")
def data_versions(workspace: DataWorkspaceOpt = DEFAULT_WORKSPACE, as_json: JsonOpt = False) -> None:
    """The dataset changelog: every frozen version and every erasure, with when, who and why."""
    from tunekit.data import versions

    entries = versions.changelog(workspace)
    if not entries and not as_json:
        console.print(f"No dataset versions in {Workspace(workspace).datasets} yet (`tunekit data check CONFIG` freezes the splits).")
        return
    rows = [{"at": e["at"].replace("T", " ")[:19], "action": e["action"], "version": e["fingerprint"], "replaced_by": e.get("replaced_by") or "",
             "rows": "/".join(str(e["rows"].get(s, 0)) for s in ("train", "validation", "test")), "by": e["by"], "why": e["reason"]}
            for e in entries]
    print_rows(Table("when (UTC)", "action", "version", "replaced by", "rows (train/validation/test)", "by", "why"), rows, as_json)


@models_app.command("tiny")
def models_tiny(out: Annotated[Path, typer.Option(help="Folder to write the model and tokenizer to.")],
                data: Annotated[Path | None, typer.Option(help="A JSONL/JSON conversation file whose text trains the tokenizer.")] = None,
                config: Annotated[Path | None, typer.Option(help="A generation config: its data files, read with its layout, column and "
                                                                 "format options, train the tokenizer (instead of --data).")] = None,
                hidden_size: Annotated[int, typer.Option(help="Width of the model.")] = 128,
                layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
                seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0) -> None:
    """Write a tiny Llama-style causal LM with random weights and its tokenizer, for tests and demos."""
    from tunekit.models.tiny import build_tiny_llama

    if data is not None and config is not None:
        raise typer.BadParameter("give --data FILE or --config CONFIG, not both")
    texts = []
    if data is not None:
        from tunekit.data.chat import read_conversations, render_plain

        texts = [render_plain(r["messages"]) for r in read_conversations(data, min_examples=1)]
    if config is not None:
        from tunekit.data.conversations import config_texts

        texts = config_texts(load(config))
    path = build_tiny_llama(out, texts, hidden_size=hidden_size, layers=layers, seed=seed)
    console.print(f"Wrote a tiny Llama ({hidden_size} wide, {layers} blocks, random weights) to {path}; use it as model.base")
