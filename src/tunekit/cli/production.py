"""Production-loop commands: ``tunekit deploy`` (shadow, canary, off, status) and ``tunekit label``
(the annotation queue, in the terminal).

``deploy`` writes ``WORKSPACE/deployment.json``; a running server serving that workspace switches
within its ``deployment_poll_s`` (no restart, no API key needed on the server's machine). Each
switch to a registry version is put on that version's audit trail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tunekit.cli.common import DEFAULT_WORKSPACE, TrackingOpt, app, console, tracking

deploy_app = typer.Typer(help="Run a challenger beside the champion: shadow (answers copies, never returned), canary (a share of callers), off.",
                         no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", help="The server's workspace (deployment.json and serving.db).")]
ChallengerArg = Annotated[str, typer.Argument(help="The challenger: NAME/VERSION, NAME@challenger, or a tunekit model folder.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in deployment.json and on the version's audit trail).")]


def _switch(mode: str, challenger: str | None, workspace: Path, tracking_uri: str | None, reason: str, **extra) -> None:
    from tunekit import registry
    from tunekit.serve.deployment import DeploymentState, read_state, write_state

    previous = read_state(workspace)
    found = registry.resolve_model(challenger, tracking(tracking_uri)) if challenger else None  # a wrong reference fails here, not on the server
    state = write_state(workspace, DeploymentState(mode=mode, challenger=challenger, reason=reason, **extra))
    audited = found if found and found.version else (registry.resolve_model(previous.challenger, tracking(tracking_uri))
                                                     if mode == "off" and previous.challenger else None)
    if audited is not None and audited.version is not None:
        what = f"deployment {mode}" + (f" (share {state.share:g})" if mode == "canary" else "")
        registry.audit(registry.client(tracking(tracking_uri)), audited.name, audited.version, f"deployed_{mode}", f"{what}: {reason or 'no reason given'}")
    console.print(f"Deployment: {mode}" + (f" of {escape(challenger)}" if challenger else "")
                  + (f", {state.share:.0%} of callers (sticky by {state.user_header}, else API key)" if mode == "canary" else "")
                  + f". A server on {workspace} switches within its deployment_poll_s.", highlight=False)


@deploy_app.command("shadow")
def deploy_shadow(challenger: ChallengerArg, workspace: WorkspaceOpt = DEFAULT_WORKSPACE, tracking_uri: TrackingOpt = None,
                  reason: ReasonOpt = "") -> None:
    """The challenger answers a copy of every request after the client has its answer; logged beside the champion's, never returned."""
    _switch("shadow", challenger, workspace, tracking_uri, reason)


@deploy_app.command("canary")
def deploy_canary(challenger: ChallengerArg,
                  share: Annotated[float, typer.Option(min=0.0001, max=1.0, help="Share of callers the challenger answers (0-1].")] = 0.1,
                  user_header: Annotated[str, typer.Option(help="Header naming the end user; the split is sticky by it, else by API key.")] = "x-user-id",
                  workspace: WorkspaceOpt = DEFAULT_WORKSPACE, tracking_uri: TrackingOpt = None, reason: ReasonOpt = "") -> None:
    """The challenger answers a sticky share of callers (by user-id header, else API key, else address)."""
    _switch("canary", challenger, workspace, tracking_uri, reason, share=share, user_header=user_header)


@deploy_app.command("off")
def deploy_off(workspace: WorkspaceOpt = DEFAULT_WORKSPACE, tracking_uri: TrackingOpt = None, reason: ReasonOpt = "") -> None:
    """The champion answers everything again."""
    _switch("off", None, workspace, tracking_uri, reason)


@deploy_app.command("status")
def deploy_status(workspace: WorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Print deployment.json (what a server on this workspace runs; GET /v1/deployment also shows its tallies)."""
    from tunekit.serve.deployment import read_state

    console.print_json(read_state(workspace).model_dump_json())


ModelArg = Annotated[str, typer.Argument(help="The served model: NAME@champion, NAME/VERSION or a tunekit model folder.")]


def _model(model: str, tracking_uri: str | None):
    """(directory, name, version) of a model reference."""
    from tunekit import registry
    from tunekit.artifacts import Manifest

    found = registry.resolve_model(model, tracking(tracking_uri))
    return found.path, found.name or Manifest.read(found.path).name, found.version


@app.command("queue")
def queue(model: ModelArg, workspace: WorkspaceOpt = DEFAULT_WORKSPACE, tracking_uri: TrackingOpt = None,
          k: Annotated[int, typer.Option("--k", min=1, help="Rows to put in the queue.")] = 50,
          since: Annotated[str, typer.Option(help="Window of logged traffic to pick from (30m, 24h, 7d).")] = "7d",
          clusters: Annotated[int | None, typer.Option(min=1, help="k-means groups the queue is spread over (default: --k, one row each).")] = None,
          uncertainty: Annotated[float, typer.Option(min=0, help="Weight of the model's uncertainty (1 - the margin between its top two labels).")] = 1.0,
          disagreement: Annotated[float, typer.Option(min=0, help="Weight of champion-challenger disagreement (0: shown, not ranked by; "
                                                      "on BANKING77 any weight cost accuracy).")] = 0.0,
          novelty: Annotated[float, typer.Option(min=0, help="Weight of the distance from the training data (0: shown, not ranked by; "
                                                 "on BANKING77 any weight cost accuracy).")] = 0.0,
          seed: Annotated[int, typer.Option(help="Seed of the clustering.")] = 0) -> None:
    """Build the annotation queue: the logged rows whose labels would teach the next model most (then `tunekit label`)."""
    import time

    from tunekit.artifacts import Manifest
    from tunekit.monitor import annotation, reference
    from tunekit.monitor.embed import MiniLMEmbedder, for_reference
    from tunekit.monitor.settings import parse_since

    path, name, version = _model(model, tracking_uri)
    ref, ref_emb = reference.load(path) if (path / reference.FILENAME).is_file() else ({}, None)
    embedder = for_reference(ref["embeddings"]["embedder"], None) if ref.get("embeddings") else MiniLMEmbedder()
    items = annotation.build(workspace, name, version, Manifest.read(path).task, ref_emb, embedder, k, time.time() - parse_since(since),
                             weights=annotation.Weights(uncertainty, disagreement, novelty), clusters=clusters, seed=seed)
    for item in items[:10]:
        console.print(f"  {item.score:.2f}  [{item.predicted}] {escape(item.text[:90])}", highlight=False)
    console.print(f"Queued {len(items)} rows of {name} in {annotation.queue_path(workspace)}; label them with "
                  f"`tunekit label {model} --workspace {workspace}`", highlight=False)


@app.command("label")
def label(model: ModelArg, workspace: WorkspaceOpt = DEFAULT_WORKSPACE, tracking_uri: TrackingOpt = None) -> None:
    """Label the annotation queue in the terminal (Enter accepts the model's answer; ? for the keys); labels go to
    `tunekit retrain --from-feedback`."""
    from tunekit.artifacts import Manifest, Workspace
    from tunekit.monitor import annotation, labelling
    from tunekit.serve.requestlog import RequestLog

    path, _, _ = _model(model, tracking_uri)
    labels = Manifest.read(path).labels
    items = annotation.read_queue(workspace)
    log = RequestLog(Workspace(workspace).serving_db)
    try:
        done = {(f["request_id"], f.get("input_index") or 0) for f in log.feedback_since(0) if f.get("key_id") == annotation.ANNOTATION_KEY}

        def save(item: annotation.QueueItem, value: str) -> None:
            log.add_feedback(item.request_id, None, value, None, "annotation queue", annotation.ANNOTATION_KEY, item.input_index)

        session = labelling.run(items, labels, input, lambda text: console.print(text, markup=False, highlight=False), save, done)
    finally:
        log.close()
    console.print(f"Labelled {session.labelled}, skipped {session.skipped}{' (stopped)' if session.stopped else ''}. "
                  "Train on them with `tunekit retrain CONFIG --from-feedback`.", highlight=False)
