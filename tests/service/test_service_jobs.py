"""Service mode driven by the official ``openai`` client, as a team leaving OpenAI's hosted fine-tuning
would drive it: upload a file, create a job, watch its events, chat with the ``ft:`` model; and the
worker killed with SIGKILL mid-job, the job finishing after a restart.

The jobs run for real in a ``tunekit worker`` process on a tiny Llama (the whole lifecycle: data
report, baseline, LoRA training, evaluation, registration), so these tests take a minute or two.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.generation.conftest import reverse_rows
from tunekit.artifacts import Workspace
from tunekit.serve.keys import KeyStore
from tunekit.serve.settings import ServeSettings
from tunekit.service.app import create_service_app
from tunekit.service.catalogue import Catalogue

pytestmark = pytest.mark.slow

JOB_DEFAULTS = {  # a tiny model's run: short sequences, a small evaluation, frequent checkpoints
    "model": {"max_length": 48},
    "train": {"checkpoint_every": 2},
    "eval": {"max_test_rows": 8, "k_shot": 0, "max_new_tokens": 8, "bootstrap_resamples": 100},
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from tunekit.models.tiny import build_tiny_llama

    texts = [r["messages"][0]["content"] for r in reverse_rows(200)]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-base"), texts, hidden_size=64, layers=2)


@pytest.fixture
def service(tmp_path, tiny_base) -> Iterator[dict]:
    """A service workspace with the tiny base in its catalogue, three keys, and a client factory."""
    workspace = Workspace(tmp_path / "ws")
    Catalogue(workspace).add("tiny", str(tiny_base))
    workspace.service.mkdir(parents=True, exist_ok=True)
    (workspace.service / "job_defaults.yaml").write_text(yaml.safe_dump(JOB_DEFAULTS))
    keys = KeyStore(workspace.keys_db)
    tokens = {"a": keys.create("fine-tune", "team a", "team-a")[0], "b": keys.create("fine-tune", "team b", "team-b")[0],
              "a-inference": keys.create("inference", "app of a", "team-a")[0]}
    settings = ServeSettings(workspace=str(workspace.root), workers=0, rate_limit_per_minute=0, max_new_tokens=16,
                             max_file_bytes=200_000, max_body_bytes=50_000)
    with TestClient(create_service_app(settings)) as http:
        def client(who: str = "a") -> openai.OpenAI:
            return openai.OpenAI(base_url="http://testserver/v1", api_key=tokens[who], http_client=http, max_retries=0)
        yield {"workspace": workspace, "client": client, "http": http}


def start_worker(workspace: Workspace, stale_after: float = 60.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tunekit.cli", "worker", "--workspace", str(workspace.root), "--stale-after", str(stale_after)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def wait_for(check: Callable[[], object], what: str, timeout: float = 600.0):
    """Poll ``check`` until it returns something truthy (a deadline only so a hang fails instead of blocking CI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def training_file(n: int = 120) -> tuple[str, bytes]:
    return "reverse.jsonl", "".join(json.dumps(r) + "\n" for r in reverse_rows(n)).encode()


def finished(client: openai.OpenAI, job_id: str):
    job = client.fine_tuning.jobs.retrieve(job_id)
    return job if job.status in ("succeeded", "failed", "cancelled") else None


def test_the_openai_client_fine_tunes_and_chats_with_the_model(service):
    client, workspace = service["client"](), service["workspace"]
    upload = client.files.create(file=training_file(), purpose="fine-tune")
    assert upload.purpose == "fine-tune" and upload.object == "file"
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, suffix="rev", seed=7, metadata={"team": "support"},
                                         method={"type": "supervised", "supervised": {"hyperparameters": {
                                             "n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": 10}}})
    assert job.status == "queued" and job.model == "tiny" and job.seed == 7 and job.user_provided_suffix == "rev"
    worker = start_worker(workspace)
    try:
        done = wait_for(lambda: finished(client, job.id), "the job to finish")
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:tiny:team-a:rev:{job.id.removeprefix('ftjob-')[:8]}"
        assert done.trained_tokens > 0 and done.finished_at >= done.created_at
        assert done.hyperparameters.n_epochs == 2 and done.hyperparameters.batch_size == 16

        # events: the stages a terminal shows, every step's loss, newest first, paginated
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=5).iter_pages())
        messages = [e.message for page in events for e in page.data]
        assert messages[0] == "The job has successfully completed" and messages[-1].startswith("Created fine-tuning job")
        assert any("1/5 data" in m for m in messages) and any("3/5 train" in m for m in messages)
        steps = [e for page in events for e in page.data if e.type == "metrics"]
        assert steps and all(e.data["train_loss"] > 0 for e in steps) and steps[0].data["step"] == steps[0].data["total_steps"]

        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert [c.metrics.step for c in checkpoints] == sorted((c.step_number for c in checkpoints), reverse=True)
        assert len(checkpoints) == 2 and all(c.metrics.valid_loss is not None for c in checkpoints)
        [result] = done.result_files
        assert b"train_loss" in client.files.content(result).read()

        # the fine-tuned model answers at once, plain and streamed, and is listed
        model = done.fine_tuned_model
        assert {"tiny", model} <= {m.id for m in client.models.list().data}
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "reverse: fig kiwi lime"}], temperature=0,
                                               max_tokens=8)
        assert reply.model == model and reply.choices[0].message.role == "assistant"
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "reverse: fig kiwi lime"}], temperature=0, max_tokens=8, stream=True)
            if chunk.choices)
        assert streamed == reply.choices[0].message.content

        # an eval samples the fine-tuned model over a template and grades it: the same answers as chat
        evaluation = client.evals.create(
            name="reverse", data_source_config={"type": "custom", "include_sample_schema": True, "item_schema": {
                "type": "object", "properties": {"words": {"type": "string"}, "answer": {"type": "string"}}, "required": ["words", "answer"]}},
            testing_criteria=[{"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
                               "operation": "eq"}])
        items = [{"item": {"words": w, "answer": " ".join(reversed(w.split()))}} for w in ("fig kiwi lime", "plum pear fig", "apple mango lime")]
        run = client.evals.runs.create(evaluation.id, name="ft", data_source={
            "type": "completions", "model": model, "source": {"type": "file_content", "content": items},
            "input_messages": {"type": "template", "template": [{"role": "user", "content": "reverse: {{item.words}}"}]},
            "sampling_params": {"temperature": 0, "max_completion_tokens": 8}})
        run = wait_for(lambda: (r := client.evals.runs.retrieve(run.id, eval_id=evaluation.id)).status in ("completed", "failed") and r,
                       "the eval run")
        assert run.status == "completed" and run.result_counts.total == 3 and run.result_counts.errored == 0
        outputs = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data
        first = next(o for o in outputs if o.datasource_item["words"] == "fig kiwi lime")
        assert first.sample.output[0].content == reply.choices[0].message.content
        assert run.result_counts.passed == sum(o.status == "pass" for o in outputs)

        # a second job, cancelled while it trains: it stops before its last step
        long_job = client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, hyperparameters={"n_epochs": 40, "batch_size": 4})
        wait_for(lambda: any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(long_job.id, limit=50).data), "a training step")
        assert client.fine_tuning.jobs.cancel(long_job.id).status in ("running", "cancelled")
        cancelled = wait_for(lambda: finished(client, long_job.id), "the cancelled job to stop")
        assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
        last = max(e.data["step"] for e in client.fine_tuning.jobs.list_events(long_job.id, limit=1000).data if e.type == "metrics")
        assert last < 40 * 3  # 40 epochs of at least 3 steps: it stopped well before the end
    finally:
        stop(worker)

    # another project sees nothing of it; an inference key may chat but not fine-tune
    other = service["client"]("b")
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    assert done.fine_tuned_model not in {m.id for m in other.models.list().data}
    assert other.fine_tuning.jobs.list().data == []
    inference = service["client"]("a-inference")
    assert inference.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "reverse: fig"}]).choices
    with pytest.raises(openai.PermissionDeniedError):
        inference.fine_tuning.jobs.list()
    with pytest.raises(openai.PermissionDeniedError):
        inference.files.create(file=training_file(), purpose="fine-tune")

    # every call is in the request log: who (key id), what (method and path), when, with its status
    import sqlite3

    # the log commits from its own thread: wait for what the calls above queued (the last one raced the read)
    assert service["http"].app.state.runtime.log.flush(timeout=10)
    with sqlite3.connect(workspace.serving_db) as conn:
        calls = conn.execute("SELECT route, status, key_id, request_json FROM requests").fetchall()
    creates = [c for c in calls if c[0] == "/v1/fine_tuning/jobs" and json.loads(c[3]).get("method") == "POST"]
    assert len(creates) == 2 and all(c[1] == 200 and c[2] for c in creates)
    assert any(c[0] == "/v1/files" and c[1] == 403 for c in calls)

    # listing: newest first, paginated with after/limit, filtered by metadata
    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [long_job.id] and listed.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(after=long_job.id).data] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "support"}).data] == [job.id]


def test_bad_jobs_are_refused_before_anything_is_queued(service):
    client = service["client"]()
    upload = client.files.create(file=training_file(), purpose="fine-tune")
    cases = [
        (dict(model="gpt-4o-mini", training_file=upload.id), "model", "'gpt-4o-mini' is not a base model this server fine-tunes; available: tiny"),
        (dict(model="tiny", training_file="file-nope"), "training_file", "no file 'file-nope' in this project"),
        (dict(model="tiny", training_file=upload.id, hyperparameters={"n_epochs": 0}), "hyperparameters.n_epochs", "0 is outside 1..50"),
        (dict(model="tiny", training_file=upload.id, hyperparameters={"batch_size": "big"}), "hyperparameters.batch_size", "is not an integer"),
        (dict(model="tiny", training_file=upload.id, suffix="has space"), "suffix", "must be 1-64 letters"),
        (dict(model="tiny", training_file=upload.id, method={"type": "reinforcement"}), "method.type", "is not supported"),
    ]
    for body, param, message in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(**body)
        assert err.value.body["param"] == param and message in err.value.body["message"], (body, err.value.body)
    bad = training_file()[1].replace(b'"role": "assistant"', b'"role": "bot"', 1)  # line 1's answer has a wrong role
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    assert "line 1: messages[1].role" in err.value.body["message"] and err.value.body["param"] == "file"
    evals_file = client.files.create(file=("items.jsonl", b'{"item": {"q": "x"}}\n'), purpose="evals")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="tiny", training_file=evals_file.id)
    assert "`supervised` fine-tuning trains on a fine-tune file of chat or prompt_completion rows" in err.value.body["message"]
    assert client.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel("ftjob-doesnotexist")

    # uploads have their own limit (max_file_bytes) above every other body's (max_body_bytes)
    def padded(n_bytes: int) -> tuple[str, bytes]:  # valid chat rows, long enough to weigh n_bytes
        row = json.dumps({"messages": [{"role": "user", "content": "x" * 990}, {"role": "assistant", "content": "y"}]}) + "\n"
        return "big.jsonl", (row * (n_bytes // len(row) + 1)).encode()

    assert client.files.create(file=padded(100_000), purpose="fine-tune").bytes > 100_000
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=padded(300_000), purpose="fine-tune")
    assert err.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 60_000}])
    assert err.value.status_code == 413 and "max_body_bytes" in err.value.message


def test_a_worker_killed_mid_job_is_recovered_and_the_job_finishes(service):
    client, workspace = service["client"](), service["workspace"]
    upload = client.files.create(file=training_file(), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, hyperparameters={"n_epochs": 6, "batch_size": 8})
    worker = start_worker(workspace)
    try:
        wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, "the first epoch's checkpoint")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # what a dead worker leaves behind
        worker = start_worker(workspace, stale_after=3)
        done = wait_for(lambda: finished(client, job.id), "the recovered job to finish")
    finally:
        stop(worker)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert any("stopped responding" in m for m in messages)
    assert any(m.startswith("Continuing from the last checkpoint (attempt 2)") for m in messages)
    steps = sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data)
    assert steps[-1] == 6 * steps[0]  # every epoch reached a checkpoint, the last one at the last step
    assert client.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "reverse: fig"}]).choices


def test_a_paused_job_resumes_from_its_checkpoint(service):
    client, workspace = service["client"](), service["workspace"]
    upload = client.files.create(file=training_file(), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, hyperparameters={"n_epochs": 4, "batch_size": 8})
    worker = start_worker(workspace)
    try:
        wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, "the first epoch's checkpoint")
        client.fine_tuning.jobs.pause(job.id)
        paused = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status == "paused" and j, "the pause")
        assert paused.fine_tuned_model is None
        with pytest.raises(openai.ConflictError):
            client.fine_tuning.jobs.pause(job.id)
        assert client.fine_tuning.jobs.resume(job.id).status == "queued"
        done = wait_for(lambda: finished(client, job.id), "the resumed job")
    finally:
        stop(worker)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert "Job paused; resume it to continue from its last checkpoint" in messages
    assert any(m.startswith("Continuing from the last checkpoint") for m in messages)
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)


def preference_file(n: int = 60) -> tuple[str, bytes]:
    """OpenAI's preference rows: the reversed list preferred over the list as it came (palindromes skipped)."""
    rows = []
    for r in reverse_rows(n * 2):
        prompt, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        unreversed = prompt.removeprefix("reverse: ")
        if answer != unreversed and len(rows) < n:
            rows.append({"input": {"messages": [{"role": "user", "content": prompt}]},
                         "preferred_output": [{"role": "assistant", "content": answer}],
                         "non_preferred_output": [{"role": "assistant", "content": unreversed}]})
    return "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_a_dpo_job_tunes_on_preference_pairs(service):
    client, workspace = service["client"](), service["workspace"]
    pairs = client.files.create(file=preference_file(), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as err:  # a chat file is not preference data
        client.fine_tuning.jobs.create(model="tiny", training_file=client.files.create(file=training_file(), purpose="fine-tune").id,
                                       method={"type": "dpo"})
    assert "fine-tune file of preference rows" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="tiny", training_file=pairs.id, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 50}}})
    assert err.value.body["param"] == "hyperparameters.beta"
    job = client.fine_tuning.jobs.create(model="tiny", training_file=pairs.id, method={"type": "dpo", "dpo": {"hyperparameters": {
        "n_epochs": 2, "batch_size": 8, "beta": 0.5}}})
    worker = start_worker(workspace)
    try:
        done = wait_for(lambda: finished(client, job.id), "the DPO job")
    finally:
        stop(worker)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.5
    config = yaml.safe_load((workspace.service / "jobs" / job.id / "config.yaml").read_text())
    assert config["task"] == "preference" and config["preference"] == {"loss": "dpo", "beta": 0.5}
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert any("pair_accuracy" in m for m in messages)
    assert client.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "reverse: fig kiwi lime"}]).choices
