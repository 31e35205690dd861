"""Production commands: serve (one model or the whole service), worker, monitor, the API keys and the base-model catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tunekit.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOpt,
    app,
    console,
    err_console,
    keys_app,
    models_app,
    print_rows,
    settings_options,
    tracking,
)
from tunekit.monitor.settings import MonitorSettings
from tunekit.serve.settings import ServeSettings

KeysWorkspaceOpt = Annotated[Path, typer.Option("--workspace", help="Workspace folder (keys in WORKSPACE/keys.db, the catalogue in WORKSPACE/service/service.db).")]


def _keys(workspace: Path):
    from tunekit.artifacts import Workspace
    from tunekit.serve.keys import KeyStore

    return KeyStore(Workspace(workspace).keys_db)


@keys_app.command("create")
def keys_create(scope: Annotated[str, typer.Option(help="`inference` (call models), `fine-tune` (also files, fine-tuning jobs and evals) "
                                                       "or `admin` (everything, incl. adapters and the base-model catalogue).")],
                name: Annotated[str, typer.Option(help="Who or what uses the key.")] = "",
                project: Annotated[str, typer.Option(help="The project the key works in: its files, jobs, evals and fine-tuned models "
                                                          "are invisible to other projects' keys.")] = "default",
                workspace: KeysWorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    token, info = _keys(workspace).create(scope, name, project)
    err_console.print(f"Created {info.scope} key {info.key_id} in project {info.project}; copy it now, it is not shown again:")
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(workspace: KeysWorkspaceOpt = DEFAULT_WORKSPACE, as_json: JsonOpt = False) -> None:
    """List API keys: id, scope, project, name, created, revoked (never the secrets)."""
    rows = [{"key_id": k.key_id, "scope": k.scope, "project": k.project, "name": k.name, "created": k.created_at,
             "revoked": k.revoked_at or ""} for k in _keys(workspace).list()]
    print_rows(Table("key id", "scope", "project", "name", "created (UTC)", "revoked (UTC)"), rows, as_json)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id, as `tunekit keys list` shows it.")],
                workspace: KeysWorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Revoke an API key; requests with it get 401 from now on."""
    if not _keys(workspace).revoke(key_id):
        raise typer.BadParameter(f"no active key {key_id!r} in {workspace}; see `tunekit keys list`")
    console.print(f"Revoked key {key_id}")


@app.command()
@settings_options(ServeSettings, rename={"rate_limit_per_minute": "--rate-limit", "request_timeout_s": "--request-timeout"})
def serve(config: Annotated[Path | None, typer.Option(help="YAML file of server settings (every option below, and `guardrails`).")] = None,
          **options) -> None:
    """Serve a model over HTTP (/v1/classify or OpenAI's /v1/chat/completions), or without --model the whole
    service: OpenAI's files, fine-tuning jobs and evals, and chat with every fine-tuned model. Keys, limits,
    guardrails, /metrics either way."""
    from tunekit.serve import serve as run_server
    from tunekit.serve.settings import load_settings

    if options["tracking_uri"] is None and config is None:
        options["tracking_uri"] = tracking(None)
    settings = load_settings(config, **options)
    if settings.model is None:
        from tunekit.service.app import run as run_service

        return run_service(settings)
    from tunekit import registry

    resolved = registry.resolve_model(settings.model, settings.tracking_uri)  # a name with no such alias: exit now, naming what exists, not a server answering 503
    if settings.runtime == "onnx":  # likewise a model without an ONNX export: the message names the command that writes one
        from tunekit.artifacts import Manifest
        from tunekit.models import onnx

        onnx.check_exportable(resolved.path, Manifest.read(resolved.path))
        onnx.read_export(onnx.export_dir(resolved.path), settings.model)
    run_server(settings)


@app.command()
def worker(workspace: Annotated[Path, typer.Option(help="The service's workspace (its service.db and, by default, its queue).")] = Path(DEFAULT_WORKSPACE),
           threads: Annotated[int, typer.Option(help="Jobs this worker runs at once, in threads of one process (they share torch's global "
                                                      "random generators, so a job's run is reproducible only at 1; start more processes instead).")] = 1,
           queue: Annotated[str | None, typer.Option(help="Queue URL: redis://HOST:6379/0 for workers on several machines (also "
                                                           "$TUNEKIT_QUEUE_URL). Default: SQLite in the workspace.")] = None,
           stale_after: Annotated[float, typer.Option(help="Seconds without a heartbeat after which a running job's worker is taken "
                                                           "to have died and the job is queued again.")] = 60.0) -> None:
    """Run fine-tuning jobs from the service's queue until interrupted (`tunekit serve` starts one itself unless --workers 0)."""
    import logging

    from tunekit.artifacts import Workspace
    from tunekit.service.queue import work

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.print(f"tunekit worker: jobs of {workspace} ({threads} at a time)", highlight=False)
    work(Workspace(workspace), queue, threads, stale_after)


@app.command()
def record(base_url: Annotated[str, typer.Option(help="The incumbent's OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")],
           model: Annotated[str, typer.Option(help="The model to record, e.g. ft:gpt-4o-mini-2024-07-18:acme::abc123.")],
           prompts: Annotated[Path, typer.Option(help="JSONL of prompts: {\"messages\": [...]} ending in a user turn, or {\"prompt\": \"...\"}.")],
           out: Annotated[Path, typer.Option(help="Chat JSONL to write (a fine-tune file); an interrupted recording continues into it.")],
           api_key_env: Annotated[str, typer.Option(help="Environment variable holding the endpoint's API key.")] = "OPENAI_API_KEY",
           max_tokens: Annotated[int | None, typer.Option(help="Longest answer to ask for (default: the endpoint's).")] = None,
           temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 records the model's most likely answers.")] = 0.0) -> None:
    """Record a model's answers from any OpenAI-compatible endpoint into a training file: distil the model you are losing."""
    import os

    from openai import OpenAI

    from tunekit.data.record import record as run_record

    key = os.environ.get(api_key_env)
    if not key:
        raise typer.BadParameter(f"${api_key_env} is not set; export the endpoint's API key there (or name another variable with --api-key-env)")
    with OpenAI(base_url=base_url, api_key=key) as client:
        done = run_record(client, model, prompts, out, max_tokens, temperature, err_console)
    console.print(f"Recorded {done.recorded} answers of {model} ({done.kept} kept from an earlier run) into {out} in {done.seconds:.0f} s; "
                  f"{done.prompt_tokens} prompt and {done.completion_tokens} completion tokens. Upload it as a fine-tune file, and "
                  "score the candidate against it with an eval.", highlight=False)


@models_app.command("add")
def models_add(name: Annotated[str, typer.Argument(help="What fine-tuning jobs call it (`model` of a job), e.g. smollm2.")],
               ref: Annotated[str, typer.Argument(help="`bundled:smollm2`, `bundled:minilm` or a model folder saved with save_pretrained.")],
               workspace: KeysWorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Add a base model to the service's catalogue: the only models fine-tuning jobs may start from."""
    from tunekit.artifacts import Workspace
    from tunekit.service.catalogue import Catalogue

    entry = Catalogue(Workspace(workspace)).add(name, ref)
    console.print(f"Added base model {entry.name} -> {entry.ref}", highlight=False)


@models_app.command("list")
def models_list(workspace: KeysWorkspaceOpt = DEFAULT_WORKSPACE, as_json: JsonOpt = False) -> None:
    """List the service's base-model catalogue."""
    from tunekit.artifacts import Workspace
    from tunekit.service.catalogue import Catalogue

    rows = [{"name": b.name, "ref": b.ref, "added_at": b.added_at} for b in Catalogue(Workspace(workspace)).list()]
    print_rows(Table("name", "model", "added (Unix time)"), rows, as_json)


@models_app.command("remove")
def models_remove(name: Annotated[str, typer.Argument(help="A name from `tunekit models list`.")],
                  workspace: KeysWorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Remove a base model from the catalogue (models fine-tuned from it keep working)."""
    from tunekit.artifacts import Workspace
    from tunekit.service.catalogue import Catalogue

    if not Catalogue(Workspace(workspace)).remove(name):
        raise typer.BadParameter(f"no base model {name!r} in the catalogue; see `tunekit models list`")
    console.print(f"Removed base model {name}")


@app.command()
@settings_options(MonitorSettings)
def monitor(config: Annotated[Path | None, typer.Option(help="YAML file of monitor settings (thresholds and every option below).")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print monitor.json to stdout instead of the summary.")] = False,
            **options) -> None:
    """Compare a model's logged production traffic with its training data (drift) and score feedback (live quality); exit 1 on an alert."""
    from tunekit import monitor as monitor_stage

    settings = monitor_stage.load_settings(config, **options)
    result = monitor_stage.run(settings)
    if as_json:
        print(json.dumps(result.report, indent=2, default=str))
    else:
        t = result.report["traffic"]
        colour = {"alert": "red", "ok": "green"}.get(result.status, "yellow")
        console.print(f"[bold {colour}]{result.status.upper()}[/]: {escape(result.report['model']['name'])}, last {settings.since}: "
                      f"{t['requests']} requests, {t['inputs']} inputs", highlight=False)
        for check in result.report["checks"]:
            stat = "n/a" if check["statistic"] is None else f"{check['statistic']:.4g}"
            p = f", p = {check['p_value']:.3g}" if check.get("p_value") is not None else ""
            console.print(f"  {'[red]drift[/]' if check['drifted'] else '[green]ok[/]   '} {check['title']}: {check['test']} {stat}{p}", highlight=False)
        from tunekit.monitor.online import lines as online_lines

        for line in online_lines(result.report.get("online") or {}):
            console.print(escape(line), highlight=False)
        for alert in result.alerts:
            console.print(f"[red]Alert:[/] {escape(alert)}", highlight=False)
        console.print(f"Report: {result.html} (also monitor.json)", highlight=False)
    if result.alerts:
        raise typer.Exit(1)
