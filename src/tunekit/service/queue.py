"""The job queue, on huey: SQLite in the workspace by default, Redis when workers live on other machines.

Why huey: it is a kept, small task queue whose SQLite storage needs no server, so ``tunekit serve``
works on a laptop with nothing else installed, and the same task runs unchanged against Redis
(``TUNEKIT_QUEUE_URL=redis://host:6379/0``) when a GPU machine joins as a worker. Only the job id
travels through the queue; the job itself (status, events, checkpoints) lives in ``service.db``.

A queue loses the task of a worker killed mid-job (``kill -9``, a lost machine): huey has already
taken it off the queue. ``recover`` closes that gap: every worker, when it starts and then every
``stale_after_s / 2`` seconds, puts back every ``running`` job whose heartbeat is older than
``stale_after_s``; the runner then continues it from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import threading

from huey import Huey, RedisHuey, SqliteHuey

from tunekit.artifacts import Workspace
from tunekit.service.jobs import JobStore

__all__ = ["enqueue", "queue_for", "recover", "work"]

logger = logging.getLogger("tunekit.service")
QUEUE_URL_ENV = "TUNEKIT_QUEUE_URL"
TASK = "tunekit.run_job"


def queue_for(workspace: Workspace, url: str | None = None) -> Huey:
    """The huey queue of ``workspace``: ``url`` (or ``$TUNEKIT_QUEUE_URL``) when it is a Redis URL, else
    SQLite at ``WORKSPACE/service/queue.db``. Registers the job task, so every process that calls
    this (the server enqueuing, a worker consuming) agrees on it by name."""
    url = url or os.environ.get(QUEUE_URL_ENV)
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        huey: Huey = RedisHuey("tunekit", url=url)
    else:
        workspace.service.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey("tunekit", filename=str(workspace.service / "queue.db"))
    root = str(workspace.root)

    def run_job(job_id: str) -> None:
        from tunekit.service.runner import execute

        execute(Workspace(root), job_id)

    huey.tunekit_run_job = huey.task(name=TASK, retries=0)(run_job)
    return huey


def enqueue(huey: Huey, job_id: str) -> None:
    """Put a job on the queue (its row is already ``queued``)."""
    huey.tunekit_run_job(job_id)


def recover(workspace: Workspace, huey: Huey, stale_after_s: float) -> list[str]:
    """Requeue every ``running`` job whose worker stopped saying it is alive; the ids requeued."""
    store, requeued = JobStore(workspace), []
    for job in store.stale(stale_after_s):
        if store.requeue(job.id, "running"):
            store.event(job.id, "The worker running this job stopped responding; the job is queued again and will continue from its last "
                                "checkpoint", level="warn")
            enqueue(huey, job.id)
            requeued.append(job.id)
    return requeued


def work(workspace: Workspace, url: str | None = None, workers: int = 1, stale_after_s: float = 60.0) -> None:
    """Run a worker until SIGINT/SIGTERM (``tunekit worker``): huey's consumer with ``workers`` threads,
    and a thread that recovers jobs of dead workers."""
    huey = queue_for(workspace, url)
    stop = threading.Event()

    def watch() -> None:
        while True:
            try:
                for job_id in recover(workspace, huey, stale_after_s):
                    logger.warning("requeued %s: its worker stopped responding", job_id)
            except Exception:  # noqa: BLE001 - a locked database now and then must not end recovery for good
                logger.exception("recovering stale jobs failed; trying again in %.0f s", stale_after_s / 2)
            if stop.wait(stale_after_s / 2):
                return

    threading.Thread(target=watch, name="tunekit-recover", daemon=True).start()
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False, max_delay=1.0)  # a new job starts within a second
    try:
        consumer.run()
    finally:
        stop.set()
