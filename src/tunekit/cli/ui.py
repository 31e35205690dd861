"""``tunekit ui``: the web console over a local workspace, with no server set up beforehand.

It is ``tunekit serve`` in service mode (files, jobs, evals, chat, and the console at ``/ui``) on
127.0.0.1, with one job worker. Signing in still takes an API key, since the console acts with a
key's scope like any client: by default the command creates a one-time ``admin`` key, prints
it, and revokes it when it stops (``--own-key``: sign in with an existing key), so no key outlives the session by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunekit.cli.common import DEFAULT_WORKSPACE, app, console, err_console


@app.command()
def ui(workspace: Annotated[Path, typer.Option(help="The workspace to show: its runs, registry, jobs, evals and request log.")] = Path(DEFAULT_WORKSPACE),
       host: Annotated[str, typer.Option(help="Interface to listen on; keep 127.0.0.1 unless others should reach it.")] = "127.0.0.1",
       port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
       one_time_key: Annotated[bool, typer.Option("--one-time-key/--own-key", help="Create a one-time admin key, print it and revoke it on "
                                                  "exit (default), or sign in with a key you already have (`tunekit keys create`).")] = True,
       workers: Annotated[int, typer.Option(help="Job worker processes to start beside the console (0: jobs wait for `tunekit worker`).")] = 1) -> None:
    """Open the web console on a local workspace: runs and report cards, models (promote, roll back), fine-tuning
    jobs with live loss curves, evals, production traffic and drift, and a chat playground."""
    from tunekit.artifacts import Workspace
    from tunekit.serve.app import serve
    from tunekit.serve.keys import KeyStore
    from tunekit.serve.settings import ServeSettings
    from tunekit.service.app import create_service_app

    settings = ServeSettings(workspace=str(workspace), host=host, port=port, workers=workers)
    store = KeyStore(Workspace(workspace).keys_db)
    one_time = None
    if one_time_key:
        token, one_time = store.create("admin", "tunekit ui (one-time, revoked on exit)")
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/ui"
    console.print(f"tunekit ui: the console of {workspace.resolve()} at [bold]{url}[/]", highlight=False)
    if one_time is not None:
        err_console.print(f"Sign in with this one-time admin key (key {one_time.key_id}; revoked when this command stops):")
        console.print(token, markup=False, highlight=False, soft_wrap=True)
    else:
        err_console.print("Sign in with an API key of this workspace (`tunekit keys create --scope admin` makes one).")
    try:
        serve(settings, create_service_app(settings))
    finally:
        if one_time is not None:
            store.revoke(one_time.key_id)
