"""The ``tunekit`` command: thin wrappers that parse arguments, call one entry function each, and
turn tunekit's errors into a message and an exit code (no traceback for user errors)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from tunekit.errors import TunekitError
from tunekit.lineage import quiet_libraries

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(help="Fine-tune a pretrained language model for your task, beat a baseline, register, serve.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
config_app = typer.Typer(help="Check and describe config files.", no_args_is_help=True)
data_app = typer.Typer(help="Check data, freeze splits, preview conversations, list versions, erase rows.", no_args_is_help=True)
registry_app = typer.Typer(help="List, promote and roll back registered model versions.", no_args_is_help=True)
models_app = typer.Typer(help="Base models for tests and demos.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(registry_app, name="registry")

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: --set train.epochs=2 (repeatable).")]
TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else ./tunekit-workspace/mlflow.db.")]
GATE_FAILED_EXIT = 10


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()
    try:
        app()
    except TunekitError as exc:
        err_console.print(f"[bold red]{type(exc).__name__}:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


def _load(path: Path, sets: list[str] | None = None):
    from tunekit.config import load_config

    overrides = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
        overrides[key] = yaml.safe_load(value)
    return load_config(path, overrides)


def _tracking(uri: str | None) -> str:
    from tunekit.registry import default_tracking_uri

    return uri or default_tracking_uri()


@app.command()
def run(config: ConfigArg, set_: SetOpt = None,
        strict: Annotated[bool, typer.Option(help=f"Exit with code {GATE_FAILED_EXIT} when the new version is not promoted.")] = False,
        resume: Annotated[str | None, typer.Option(help="Id of an interrupted run (a folder in WORKSPACE/runs) to continue from its last checkpoint.")] = None,
        nproc: Annotated[int, typer.Option("--nproc", min=1, help="Train data-parallel in N processes on this machine: one per GPU, or CPU processes. "
                                                                   "The same result as one process with the same train.batch_size (the global batch). "
                                                                   "Leave it out under torchrun or accelerate launch.")] = 1) -> None:
    """Run the whole lifecycle: data check, baseline, train, evaluate, register and gate."""
    from tunekit import pipeline
    from tunekit.train import distributed

    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # run this same command in N processes; rank 0's exit code is ours
        args = ["run", str(config), *(f"--set={s}" for s in set_ or []), *(["--strict"] if strict else []),
                *(["--resume", resume] if resume else []), f"--nproc={nproc}"]
        raise typer.Exit(distributed.launch(nproc, args))
    distributed.init()  # one of several processes (--nproc, torchrun, accelerate launch): join the group, take GPU LOCAL_RANK
    outcome = pipeline.run(_load(config, set_), console if distributed.is_main() else Console(quiet=True), resume)
    if outcome is None:  # a rank other than 0: it helped train; rank 0 evaluates, registers and reports
        return
    if strict and not outcome.decision.passed:
        raise typer.Exit(GATE_FAILED_EXIT)


@app.command()
def retrain(config: ConfigArg, from_feedback: Annotated[bool, typer.Option("--from-feedback", help="Add the corrections collected by the server (POST /v1/feedback) to the training data.")] = False,
            set_: SetOpt = None,
            strict: Annotated[bool, typer.Option(help=f"Exit with code {GATE_FAILED_EXIT} when the new version is not promoted.")] = False) -> None:
    """Retrain on the training data plus production feedback; promotion only through the gate (the champion stays if it fails)."""
    from tunekit.retrain import retrain_from_feedback

    if not from_feedback:
        raise typer.BadParameter("say where the new data comes from: --from-feedback (for a plain retrain, use tunekit run)")
    outcome = retrain_from_feedback(_load(config, set_), console)
    if strict and not outcome.decision.passed:
        raise typer.Exit(GATE_FAILED_EXIT)


@app.command("compare-methods")
def compare_methods_command(config: ConfigArg,
                            methods: Annotated[str, typer.Option(help="Comma-separated method kinds, e.g. lora,ia3,prompt_tuning,full.")] = "lora,ia3,freeze,full",
                            set_: SetOpt = None) -> None:
    """Train several methods on the same frozen splits; one table of cost and quality (eval.primary) against the baseline, for any task."""
    from tunekit.compare_methods import compare_methods

    compare_methods(_load(config, set_), [m.strip() for m in methods.split(",") if m.strip()], console)


@app.command()
def tune(config: ConfigArg, set_: SetOpt = None,
         trials: Annotated[int | None, typer.Option(help="Override tune.trials.")] = None,
         minutes: Annotated[float | None, typer.Option(help="Override tune.minutes.")] = None) -> None:
    """Hyperparameter search with Optuna on the validation split; writes the best trial's config."""
    from tunekit.tune import tune as run_search

    extra = [f"tune.trials={trials}"] if trials else []
    extra += [f"tune.minutes={minutes}"] if minutes else []
    run_search(_load(config, [*(set_ or []), *extra]), console)


@app.command()
def plan(config: ConfigArg, gpu: Annotated[str | None, typer.Option(help="GPU to check the fit against, e.g. h100-80gb.")] = None,
         set_: SetOpt = None) -> None:
    """Estimate parameters and training memory for the configured method before training; say whether it fits."""
    from tunekit import data
    from tunekit import plan as planning

    cfg = _load(config, set_)
    # classification reads (and freezes) the splits: the head's size is part of the plan
    labels = {"generation": None, "regression": 1}[cfg.task] if cfg.task != "classification" else len(data.prepare(cfg).labels)
    console.print(planning.render_markdown(planning.plan(cfg, gpu, num_labels=labels)), markup=False, highlight=False)


@config_app.command("validate")
def config_validate(config: ConfigArg) -> None:
    """Validate a config file and print it with every default filled in."""
    cfg = _load(config)
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
    """Read and validate the data, freeze the splits and write the data report."""
    from tunekit import data, models

    cfg = _load(config, set_)
    if cfg.task == "generation":
        from tunekit.data import conversations

        prepared, _ = _conversations(cfg)
        console.print(conversations.summary(prepared), markup=False, highlight=False)
    else:
        prepared = data.prepare(cfg, models.load_tokenizer(cfg.model.base, cfg.model.revision))
        console.print(data.summary(prepared), markup=False, highlight=False)
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

    from tunekit.data import conversations

    cfg = _load(config, set_)
    if cfg.task != "generation":
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


@app.command("reproduce")
def reproduce_command(model: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS of a registered version.")],
                      tolerance: Annotated[float, typer.Option(help="Largest allowed |reproduced - recorded| per metric, times max(1, |recorded|).")] = 1e-4,
                      workspace: Annotated[Path | None, typer.Option(help="Workspace holding the frozen splits. Default: the one the version was trained in.")] = None,
                      tracking_uri: TrackingOpt = None) -> None:
    """Train a registered version again from its recorded config, data and seed; exit 1 unless every test metric matches."""
    from tunekit.reproduce import reproduce

    result = reproduce(model, _tracking(tracking_uri), tolerance, console, workspace)
    table = Table("metric", "recorded", "reproduced", "|diff|", "allowed", "match")
    for c in result.checks:
        table.add_row(c.name, f"{c.recorded:.6f}", "not measured" if c.reproduced is None else f"{c.reproduced:.6f}",
                      "" if c.diff is None else f"{c.diff:.1e}", f"{c.allowed:.1e}", "[green]yes[/]" if c.ok else "[red]no[/]")
    console.print(table)
    for note in result.notes:
        console.print(f"Note: {note}", highlight=False)
    if not result.ok:
        failed = [c.name for c in result.checks if not c.ok]
        err_console.print(f"[bold red]{result.name} v{result.version} did not reproduce:[/] {', '.join(failed)} differ by more than the "
                          f"tolerance; the new model is in {result.out_dir}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]{result.name} v{result.version} reproduced:[/] every test metric within tolerance "
                  f"(data {result.data_fingerprint[:16]}); the new model is in {result.out_dir}", highlight=False)


DataWorkspaceOpt = Annotated[Path, typer.Option("--workspace", help="Workspace folder holding datasets/.")]


@data_app.command("forget")
def data_forget(reason: Annotated[str, typer.Option(help="Why (a request or ticket id); recorded in the changelog.")],
                where: Annotated[str | None, typer.Option(help="Rows to erase: text~=REGEX, text==VALUE, id==VALUE or label==VALUE "
                                                              "(text covers text_pair and every message of a conversation).")] = None,
                ids: Annotated[Path | None, typer.Option(help="File of row ids to erase, one per line.")] = None,
                workspace: DataWorkspaceOpt = Path("tunekit-workspace"),
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
        table.add_row(d.fingerprint[:16], d.new_fingerprint[:16], "/".join(str(d.removed[s]) for s in ("train", "validation", "test")),
                      "/".join(str(d.remaining[s]) for s in ("train", "validation", "test")))
    console.print(table)
    console.print(f"Erased {result.rows} rows from {len(result.datasets)} dataset versions; recorded in "
                  f"{workspace / 'datasets' / versions.CHANGELOG}", highlight=False)
    sources = sorted({s for d in result.datasets for s in d.sources})
    if sources:
        console.print("The source files still hold these rows; remove them there too: " + ", ".join(sources), highlight=False)
    if result.registry is None:
        console.print(f"No registry searched (no {workspace / 'mlflow.db'}); pass --tracking-uri to list the model versions trained on these rows")
    elif not result.models:
        console.print("No registered model version was trained on these dataset versions.")
    else:
        models = Table("model", "version", "aliases", "trained on", "run folder")
        for m in result.models:
            models.add_row(m.name, m.version, ", ".join(m.aliases), m.data_fingerprint[:16], m.run_dir or "")
        console.print(models)
        console.print("[yellow]These versions were trained on the erased rows:[/] retrain on the current data (`tunekit run CONFIG`), then "
                      "retire them; their run folders and MLflow artifacts still hold predictions on the test rows.")


@data_app.command("versions")
def data_versions(workspace: DataWorkspaceOpt = Path("tunekit-workspace")) -> None:
    """The dataset changelog: every frozen version and every erasure, with when, who and why."""
    from tunekit.data import versions

    entries = versions.changelog(workspace)
    if not entries:
        console.print(f"No dataset versions in {workspace / 'datasets'} yet (`tunekit data check CONFIG` freezes the splits).")
        return
    table = Table("when (UTC)", "action", "version", "rows (train/validation/test)", "by", "why")
    for e in entries:
        version = e["fingerprint"][:16] + (f" -> {e['replaced_by'][:16]}" if e.get("replaced_by") else "")
        table.add_row(e["at"].replace("T", " ")[:19], e["action"], version,
                      "/".join(str(e["rows"].get(s, 0)) for s in ("train", "validation", "test")), e["by"], e["reason"])
    console.print(table)


@models_app.command("tiny")
def models_tiny(out: Annotated[Path, typer.Option(help="Folder to write the model and tokenizer to.")],
                data: Annotated[Path | None, typer.Option(help="A JSONL/JSON conversation file whose text trains the tokenizer.")] = None,
                hidden_size: Annotated[int, typer.Option(help="Width of the model.")] = 128,
                layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
                seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0) -> None:
    """Write a tiny Llama-style causal LM with random weights and its tokenizer, for tests and demos."""
    from tunekit.models.tiny import build_tiny_llama

    texts = []
    if data is not None:
        from tunekit.data.chat import read_conversations, render_plain

        texts = [render_plain(r["messages"]) for r in read_conversations(data, min_examples=1)]
    path = build_tiny_llama(out, texts, hidden_size=hidden_size, layers=layers, seed=seed)
    console.print(f"Wrote a tiny Llama ({hidden_size} wide, {layers} blocks, random weights) to {path}; use it as model.base")


@app.command()
def export(model: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION or a model directory.")],
           out: Annotated[Path, typer.Option(help="Folder for the merged model (must be new or empty).")],
           merge: Annotated[bool, typer.Option(help="Merge the adapter into the base weights (the only export kind so far).")] = True,
           tolerance: Annotated[float, typer.Option(help="Largest logit difference between merged and adapter model that passes the check.")] = 1e-3,
           tracking_uri: TrackingOpt = None) -> None:
    """Write a merged, standalone model, verified against the adapter model on a set of prompts."""
    from tunekit.export import export_merged

    if not merge:
        raise typer.BadParameter("only --merge exports exist; the adapter directory itself is already the unmerged export")
    result = export_merged(_model_dir(model, tracking_uri), out, tolerance=tolerance)
    console.print(f"[green]Merged model written to {result.out_dir}[/]: logits match the adapter model on {result.prompts} prompts "
                  f"(largest difference {result.max_abs_diff:.2e}, tolerance {result.tolerance:g})")


def _model_dir(model: str, tracking_uri: str | None) -> Path:
    """A model directory from a path or a registry reference."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    from tunekit import registry

    return Path(registry.resolve(model, _tracking(tracking_uri)).path)


keys_app = typer.Typer(help="Create, list and revoke the server's API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
WorkspaceOpt = Annotated[Path, typer.Option(help="Workspace folder; the keys live in WORKSPACE/keys.db.")]


def _keys(workspace: Path):
    from tunekit.serve.keys import FILENAME, KeyStore

    return KeyStore(workspace / FILENAME)


@keys_app.command("create")
def keys_create(scope: Annotated[str, typer.Option(help="`inference` (call models) or `admin` (everything, incl. loading adapters).")],
                name: Annotated[str, typer.Option(help="Who or what uses the key.")] = "",
                workspace: WorkspaceOpt = Path("tunekit-workspace")) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    token, info = _keys(workspace).create(scope, name)
    err_console.print(f"Created {info.scope} key {info.key_id}; copy it now, it is not shown again:")
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(workspace: WorkspaceOpt = Path("tunekit-workspace")) -> None:
    """List API keys: id, scope, name, created, revoked (never the secrets)."""
    table = Table("key id", "scope", "name", "created (UTC)", "revoked (UTC)")
    for k in _keys(workspace).list():
        table.add_row(k.key_id, k.scope, k.name, k.created_at, k.revoked_at or "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id, as `tunekit keys list` shows it.")],
                workspace: WorkspaceOpt = Path("tunekit-workspace")) -> None:
    """Revoke an API key; requests with it get 401 from now on."""
    if not _keys(workspace).revoke(key_id):
        raise typer.BadParameter(f"no active key {key_id!r} in {workspace}; see `tunekit keys list`")
    console.print(f"Revoked key {key_id}")


@registry_app.command("list")
def registry_list(name: Annotated[str | None, typer.Argument(help="Registered model; all models when omitted.")] = None,
                  tracking_uri: TrackingOpt = None) -> None:
    """List registered models, or the versions of one with their aliases and metrics."""
    from tunekit import registry

    mlc = registry.client(_tracking(tracking_uri))
    if name is None:
        table = Table("model", "versions", "aliases")
        for rm in mlc.search_registered_models():
            table.add_row(rm.name, str(len(mlc.search_model_versions(f"name = '{rm.name}'"))),
                          ", ".join(f"{a}=v{v}" for a, v in (rm.aliases or {}).items()))
        console.print(table)
        return
    table = Table("version", "aliases", "primary metric", "test", "baseline", "created", "run")
    for mv in registry.list_versions(mlc, name):
        tags = mv.tags or {}
        primary = tags.get("primary_metric", "")
        table.add_row(mv.version, ", ".join(mv.aliases or []), primary, tags.get(f"test_{primary}", "")[:6],
                      tags.get(f"baseline_{primary}", "")[:6], _ms_to_str(mv.creation_timestamp), mv.run_id or "")
    console.print(table)


@registry_app.command("history")
def registry_history(name: Annotated[str, typer.Argument(help="Registered model.")], tracking_uri: TrackingOpt = None) -> None:
    """Every registration, promotion, demotion and rollback of a model, oldest first."""
    from tunekit import registry

    table = Table("when (UTC)", "version", "event", "by", "why")
    for e in registry.history(registry.client(_tracking(tracking_uri)), name):
        table.add_row(e["at"].replace("T", " ")[:19], e["version"], e["action"], e["by"], e["reason"])
    console.print(table)


@registry_app.command("promote")
def registry_promote(name: Annotated[str, typer.Argument(help="Registered model.")],
                     version: Annotated[str, typer.Argument(help="Version to make champion.")],
                     reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "manual promotion",
                     tracking_uri: TrackingOpt = None) -> None:
    """Make a version the champion by hand (bypasses the gate; the reason is recorded)."""
    from tunekit import registry

    prev = registry.promote(registry.client(_tracking(tracking_uri)), name, version, reason)
    console.print(f"{name} v{version} is now champion" + (f" (was v{prev})" if prev else ""))


@registry_app.command("rollback")
def registry_rollback(name: Annotated[str, typer.Argument(help="Registered model.")],
                      reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "manual rollback",
                      tracking_uri: TrackingOpt = None) -> None:
    """Give the champion alias back to the version the current champion replaced."""
    from tunekit import registry

    old, new = registry.rollback(registry.client(_tracking(tracking_uri)), name, reason)
    console.print(f"{name}: champion rolled back from v{old} to v{new}")


@app.command()
def serve(model: Annotated[str | None, typer.Option(help="NAME@ALIAS, NAME/VERSION or a model directory.")] = None,
          config: Annotated[Path | None, typer.Option(help="YAML file of server settings (every option below, and `guardrails`).")] = None,
          tracking_uri: TrackingOpt = None,
          host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
          workspace: Annotated[str | None, typer.Option(help="Folder of keys.db and serving.db (default tunekit-workspace).")] = None,
          no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without API keys: for local use only.")] = False,
          rate_limit: Annotated[float | None, typer.Option(help="Requests per minute per key (default 600; 0: no limit).")] = None,
          max_body_bytes: Annotated[int | None, typer.Option(help="Largest request body (default 1000000; larger: HTTP 413).")] = None,
          max_inputs: Annotated[int | None, typer.Option(help="Most texts in one request (default 64; more: HTTP 413).")] = None,
          max_chars: Annotated[int | None, typer.Option(help="Longest text in characters (default 10000; longer: HTTP 413).")] = None,
          max_new_tokens: Annotated[int | None, typer.Option(help="Generation: most tokens per answer (default 512).")] = None,
          request_timeout: Annotated[float | None, typer.Option(help="Seconds before a request is answered 504 (default 60).")] = None,
          batch_size: Annotated[int | None, typer.Option(help="Most rows per micro-batched forward pass (default 32).")] = None,
          max_wait_ms: Annotated[float | None, typer.Option(help="How long a micro-batch waits for company (default 5 ms).")] = None,
          device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps or auto (default cpu).")] = None) -> None:
    """Serve a model over HTTP: /v1/classify or OpenAI's /v1/chat/completions, with keys, limits, guardrails, /metrics."""
    from tunekit.serve import serve as run_server
    from tunekit.serve.settings import load_settings

    settings = load_settings(config, model=model, tracking_uri=tracking_uri or (None if config else _tracking(None)), host=host,
                             port=port, workspace=workspace, auth=False if no_auth else None, rate_limit_per_minute=rate_limit,
                             max_body_bytes=max_body_bytes, max_inputs=max_inputs, max_chars=max_chars, max_new_tokens=max_new_tokens,
                             request_timeout_s=request_timeout, batch_size=batch_size, max_wait_ms=max_wait_ms, device=device)
    run_server(settings)


@app.command()
def monitor(model: Annotated[str | None, typer.Option(help="NAME@ALIAS, NAME/VERSION or a model directory; its reference.json (written at training time) is what traffic is compared with.")] = None,
            since: Annotated[str | None, typer.Option(help="Window of traffic back from now: 30m, 24h, 7d (default 24h).")] = None,
            config: Annotated[Path | None, typer.Option(help="YAML file of monitor settings (thresholds and every option below).")] = None,
            workspace: Annotated[str | None, typer.Option(help="The server's workspace, holding serving.db; the report goes to WORKSPACE/monitor/ (default tunekit-workspace).")] = None,
            tracking_uri: TrackingOpt = None,
            min_requests: Annotated[int | None, typer.Option(help="Fewest production inputs for a drift verdict (default 30); fewer: `not enough traffic`, no alert.")] = None,
            p_value: Annotated[float | None, typer.Option(help="Significance level of the per-feature tests (default 0.01).")] = None,
            domain_auc: Annotated[float | None, typer.Option(help="Embedding-drift alert at this domain-classifier AUC (default 0.75).")] = None,
            confidence_drop: Annotated[float | None, typer.Option(help="Alert when mean confidence falls this much below validation's (default 0.1).")] = None,
            psi: Annotated[bool | None, typer.Option("--psi/--no-psi", help="Also compute the population stability index of every feature.")] = None,
            min_feedback_accuracy: Annotated[float | None, typer.Option(help="Alert when accuracy on feedback-labelled requests is below this (default: off).")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print monitor.json to stdout instead of the summary.")] = False) -> None:
    """Compare a model's logged production traffic with its training data (drift) and score feedback (live quality); exit 1 on an alert."""
    from rich.markup import escape

    from tunekit import monitor as monitor_stage

    settings = monitor_stage.load_settings(config, model=model, since=since, workspace=workspace, tracking_uri=tracking_uri,
                                           min_requests=min_requests, p_value=p_value, domain_auc=domain_auc,
                                           confidence_drop=confidence_drop, psi=psi, min_feedback_accuracy=min_feedback_accuracy)
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
        for alert in result.alerts:
            console.print(f"[red]Alert:[/] {escape(alert)}", highlight=False)
        console.print(f"Report: {result.html} (also monitor.json)", highlight=False)
    if result.alerts:
        raise typer.Exit(1)


WorkspaceOpt = Annotated[Path, typer.Option(help="Workspace holding runs/.")]


@app.command()
def report(run: Annotated[str, typer.Argument(help="Run id (a folder in WORKSPACE/runs) or a run folder.")],
           compare: Annotated[str | None, typer.Option(help="Another run on the same test rows to compare against RUN.")] = None,
           workspace: WorkspaceOpt = Path("tunekit-workspace")) -> None:
    """Rebuild a run's report card (Markdown, JSON, self-contained HTML), or compare two runs."""
    from tunekit.evaluate import compare as comparing
    from tunekit.evaluate import html
    from tunekit.evaluate import report as card_report

    run_dir = _run_dir(run, workspace)
    if compare is None:
        _, _, page = card_report.write(comparing.load_card(run_dir), run_dir)
        console.print(f"Report card: {page}")
        return
    other = _run_dir(compare, workspace)
    result, text = comparing.compare(other, run_dir)
    stem = f"compare-{other.name}"
    (run_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (run_dir / f"{stem}.md").write_text(text)
    page = run_dir / f"{stem}.html"
    page.write_text(html.render(text, run_dir, f"{run_dir.name} vs {other.name}"))
    console.print(text, markup=False, highlight=False)
    console.print(f"Comparison: {page}")


def _run_dir(run: str, workspace: Path) -> Path:
    for candidate in (Path(run), workspace / "runs" / run):
        if (candidate / "report.json").is_file():
            return candidate
    runs = sorted(p.name for p in (workspace / "runs").glob("*")) if (workspace / "runs").is_dir() else []
    raise TunekitError(f"run {run!r}: no report.json in {run} or {workspace / 'runs' / run}; runs in {workspace}: {', '.join(runs[-5:]) or 'none'}")


@app.command()
def explain(model: Annotated[str, typer.Option(help="NAME@ALIAS, NAME/VERSION or a model directory.")],
            texts: Annotated[list[str], typer.Argument(help="Texts to explain.", show_default=False)],
            tracking_uri: TrackingOpt = None) -> None:
    """Show which words drove each prediction (occlusion: the drop in probability without the word)."""
    from tunekit.evaluate.explain import occlusion
    from tunekit.serve import ServeSettings
    from tunekit.serve.loading import default_loader

    loaded = default_loader(ServeSettings(model=model, tracking_uri=_tracking(tracking_uri)))
    for text in texts:
        e = occlusion(loaded.model.predict_proba, text, loaded.model.labels)
        words = " ".join(_shade(w, a) for w, a in e["attributions"])
        console.print(f"{words}  ->  [bold]{e['label']}[/] ({e['probability']:.2f})")
        console.print("  " + ", ".join(f"{w} {a:+.2f}" for w, a in sorted(e["attributions"], key=lambda wa: -wa[1])[:5]), highlight=False)


def _shade(word: str, attribution: float) -> str:
    from rich.markup import escape

    if attribution >= 0.2:
        return f"[bold green]{escape(word)}[/]"
    if attribution >= 0.05:
        return f"[green]{escape(word)}[/]"
    if attribution <= -0.05:
        return f"[red]{escape(word)}[/]"
    return escape(word)


def _ms_to_str(ms: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") if ms else ""


if __name__ == "__main__":
    main()
